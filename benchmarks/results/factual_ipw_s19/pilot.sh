#!/bin/bash
export PYTHONPATH=/work/s19/code_ipw/src
for c in strong-conf earnings-strong-conf binary-strong-conf strong-conf-strong-het instruments-strong-conf base randomised ihdp-cov earnings binary; do
  python3 -m csna bench suite --start 1011 --reps 1 --peers none --jobs 1 --quiet --cells $c --out /work/s19/pilot_d0 --resume
  python3 -m csna bench suite --start 1011 --reps 1 --peers none --jobs 1 --quiet --cells $c --set train.factual_weights=ipw --out /work/s19/pilot_d1 --resume
done
echo PILOT DONE
