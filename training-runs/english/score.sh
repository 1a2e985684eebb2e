#!/usr/bin/env bash
# The held-out scores docs/english.md gives for the English model, in bits per character: the
# test authors of pg-authors (never trained on, never validated on), two Wells novels and Tiny
# Shakespeare, each read as `charlm evaluate --corpus FILE` reads a user's book (a Project Gutenberg
# file without its header and licence). About 25 minutes on 2 cores, most of them the test authors.
#
#     CHARLM_DATA=../shared/data bash training-runs/english/score.sh [RUN]   # default: the shipped model
set -euo pipefail
data=${CHARLM_DATA:?CHARLM_DATA names the folder of the corpora}
run=("$@")  # no RUN: charlm's own English model, as shipped (half precision)
score() {  # $1: the name in the table; the rest: evaluate's flags
    local name=$1; shift
    local bits
    bits=$(charlm evaluate "${run[@]}" "$@" --json -q | python3 -c \
        "import json, sys; print(format(json.loads(sys.stdin.readline())['bits_per_character'], '.3f'))")
    printf '| %s | %s |\n' "$name" "$bits"
}
printf '| text | bits/char |\n|---|---:|\n'
score "H. G. Wells, The Time Machine" --corpus "$data/timemachine.txt"
score "H. G. Wells, The War of the Worlds (36-0.txt)" --corpus "$data/36-0.txt"
score "Tiny Shakespeare" --corpus "$data/tinyshakespeare.txt"
score "pg-authors's test authors" --corpus pg-authors --split test
