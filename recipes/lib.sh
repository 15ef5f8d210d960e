# Sourced by the recipes (recipes/*/*.sh): their flag parsing, stage test and common paths, written
# once. A recipe sets its defaults as shell variables, then calls
#
#   parse_flags work jobs stage stop_stage seed neural? -- "$@"
#
# which sets each listed variable from its flag (--stop-stage VALUE sets stop_stage; a name ending
# in "?" is a switch: --neural sets neural=1; books=only_books: --books VALUE sets only_books), prints
# the script's comment header for -h/--help and exits 2 on anything else.

# The script's comment header (line 2 up to the first line that is not a comment).
print_header() {
  awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"
}

parse_flags() {
  # Locals are prefixed: printf -v into a recipe variable that a local shadowed (e.g. a recipe's
  # own "name") would set the local and leave the recipe's default in place.
  local -A _pf_values=() _pf_switches=()
  local _pf_spec
  while (($#)) && [[ $1 != -- ]]; do
    _pf_spec=$1
    if [[ $_pf_spec == *\? ]]; then
      _pf_switches[${_pf_spec%\?}]=${_pf_spec%\?}
    else
      _pf_values[${_pf_spec%%=*}]=${_pf_spec#*=}
    fi
    shift
  done
  (($#)) && shift
  local _pf_flag _pf_name
  while (($#)); do
    _pf_flag=$1
    _pf_name=${_pf_flag#--}
    [[ $_pf_name == *_* ]] && _pf_name=!  # --stop-stage names stop_stage, --stop_stage nothing
    _pf_name=${_pf_name//-/_}
    if [[ $_pf_flag == -h || $_pf_flag == --help ]]; then
      print_header
      exit 0
    elif [[ $_pf_flag == --* && -n ${_pf_switches[$_pf_name]:-} ]]; then
      printf -v "${_pf_switches[$_pf_name]}" '%s' 1
      shift
    elif [[ $_pf_flag == --* && -n ${_pf_values[$_pf_name]:-} ]]; then
      if (($# < 2)); then
        echo "$_pf_flag: expected a value, found none" >&2
        exit 2
      fi
      printf -v "${_pf_values[$_pf_name]}" '%s' "$2"
      shift 2
    else
      echo "unknown argument: $_pf_flag" >&2
      exit 2
    fi
  done
}

# run N: whether stage N is between --stage and --stop-stage (stop_stage defaults to every stage).
run() { (($1 >= stage && $1 <= ${stop_stage:-1000})); }

# The public-domain book texts every recipe reads (userlibri corpora fetch puts them here).
books_cache() {
  echo "${USERLIBRI_CACHE:-$HOME/.cache/userlibri}/corpora"
}
