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
  local -A values=() switches=()
  local spec
  while (($#)) && [[ $1 != -- ]]; do
    spec=$1
    if [[ $spec == *\? ]]; then
      switches[${spec%\?}]=${spec%\?}
    else
      values[${spec%%=*}]=${spec#*=}
    fi
    shift
  done
  (($#)) && shift
  local flag name
  while (($#)); do
    flag=$1
    name=${flag#--}
    [[ $name == *_* ]] && name=!  # --stop-stage names stop_stage, --stop_stage nothing
    name=${name//-/_}
    if [[ $flag == -h || $flag == --help ]]; then
      print_header
      exit 0
    elif [[ $flag == --* && -n ${switches[$name]:-} ]]; then
      printf -v "${switches[$name]}" '%s' 1
      shift
    elif [[ $flag == --* && -n ${values[$name]:-} ]]; then
      if (($# < 2)); then
        echo "$flag: expected a value, found none" >&2
        exit 2
      fi
      printf -v "${values[$name]}" '%s' "$2"
      shift 2
    else
      echo "unknown argument: $flag" >&2
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
