#!/bin/sh
# The GPU proof in one command (issue 14): on a CUDA machine it measures the giant configuration, elsewhere
# (or with --tiny) a tiny one. Python: $PYTHON, else the repository's .venv, else python3.
#     benchmarks/gpu_check.sh [--tiny] [--phases step,memory,fill,loso] [--folds 2] [--out PATH]
here=$(dirname "$0")
if [ -n "$PYTHON" ]; then
    python=$PYTHON
elif [ -x "$here/../.venv/bin/python" ]; then
    python=$here/../.venv/bin/python
else
    python=python3
fi
exec "$python" "$here/gpu_check.py" "$@"
