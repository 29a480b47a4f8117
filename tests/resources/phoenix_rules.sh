#!/usr/bin/env bash
# The gloss rules of docs/original_vac.md ("Scoring") as the original applies them (sed, then perl four times), used by the
# tests as an independent oracle for train/scoring/normalisation.py. Reads lines on stdin.
set -euo pipefail
collapse='s,(?<![\w-])(\b[A-Z]+(?![\w-])) \1(?![\w-]),\1,g;'
LC_ALL=C sed -e 's,loc-,,g' -e 's,cl-,,g' -e 's,qu-,,g' -e 's,poss-,,g' -e 's,lh-,,g' \
  -e 's,S0NNE,SONNE,g' -e 's,HABEN2,HABEN,g' -e 's,__EMOTION__,,g' -e 's,__PU__,,g' -e 's,__LEFTHAND__,,g' \
  -e 's,WIE AUSSEHEN,WIE-AUSSEHEN,g' -e 's,ZEIGEN ,ZEIGEN-BILDSCHIRM ,g' -e 's,ZEIGEN$,ZEIGEN-BILDSCHIRM,' \
  -e 's,^\([A-Z]\) \([A-Z][+ ]\),\1+\2,g' -e 's,[ +]\([A-Z]\) \([A-Z]\) , \1+\2 ,g' \
  -e 's,\([ +][A-Z]\) \([A-Z][ +]\),\1+\2,g' -e 's,\([ +][A-Z]\) \([A-Z][ +]\),\1+\2,g' \
  -e 's,\([ +][A-Z]\) \([A-Z][ +]\),\1+\2,g' -e 's,\([ +]SCH\) \([A-Z][ +]\),\1+\2,g' \
  -e 's,\([ +]NN\) \([A-Z][ +]\),\1+\2,g' -e 's,\([ +][A-Z]\) \(NN[ +]\),\1+\2,g' \
  -e 's,\([ +][A-Z]\) \([A-Z]\)$,\1+\2,g' -e 's,\([A-Z][A-Z]\)RAUM,\1,g' -e 's,-PLUSPLUS,,g' \
  | perl -pe "$collapse" | perl -pe "$collapse" | perl -pe "$collapse" | perl -pe "$collapse" \
  | sed -e 's,[[:space:]]*$,,'
