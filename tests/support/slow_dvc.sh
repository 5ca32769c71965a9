#!/bin/sh
# A stand-in for a `dvc repro <stage>` that takes long: it prints DVC's first line, starts its
# "stage" (a sleep) and records both pids in the working directory, then waits.
echo "Running stage '$2':"
sleep 120 &
echo "$$ $!" > slow_dvc.pids
wait
