# bench/lib/noise.sh — how busy the machine was, for bench/run and bench/email. Sourced.
#
# The development machine is shared with other sessions. Before each phase a script waits
# (up to BENCH_QUIET_WAIT s, default 30) for the machine to be nearly idle, and after it
# records how much CPU processes other than the benchmark's used, so a figure taken while
# someone else was compiling can be recognised as such.
#
#   phase_start            wait for a quiet second, then start counting
#   phase_noise            "N%": all cores' CPU used by others since phase_start
#
# The sourcing script defines noise_pids, which prints the pids of its own long-lived
# processes (servers it started); this shell, its reaped children and PostgreSQL count as
# its own too.

CORES=$(nproc)
HZ=$(getconf CLK_TCK)
QUIET_WAIT=${BENCH_QUIET_WAIT:-30}
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
# Ticks used by the benchmark: this script and the children it reaped (wrk, pgbench, the
# helper), the processes noise_pids names, and PostgreSQL (live processes, plus the
# backends the postmaster reaped). Other sessions' queries count as ours, so noise is if
# anything underestimated.
our_ticks() {
  local files=("/proc/$$/stat") postmaster p
  for p in $(noise_pids); do files+=("/proc/$p/stat"); done
  postmaster=$(pgrep -o -x postgres || true)
  for p in $(pgrep -x postgres || true); do files+=("/proc/$p/stat"); done
  awk -v reaper="$postmaster" -v self=$$ '
    { pid = $1; rest = $0; sub(/^.*\) /, "", rest); split(rest, f, " ")
      ticks += f[12] + f[13]
      if (pid == reaper || pid == self) ticks += f[14] + f[15] }
    END { print ticks + 0 }' "${files[@]}" 2>/dev/null || true
}
wait_quiet() {
  local waited=0 before
  while ((waited < QUIET_WAIT)); do
    before=$(busy_ticks)
    sleep 1
    waited=$((waited + 1))
    (($(busy_ticks) - before <= HZ * CORES / 10)) && return 0
  done
  say "the machine stayed busy for ${QUIET_WAIT} s; measuring anyway (see 'other processes')"
}
phase_start() {
  wait_quiet
  PHASE_T0=$(date +%s.%N) PHASE_BUSY0=$(busy_ticks) PHASE_OURS0=$(our_ticks)
}
# Percent of all cores used by other processes since phase_start.
phase_noise() {
  awk -v t0="$PHASE_T0" -v t1="$(date +%s.%N)" -v b="$(($(busy_ticks) - PHASE_BUSY0))" \
    -v o="$(($(our_ticks) - PHASE_OURS0))" -v hz="$HZ" -v cores="$CORES" \
    'BEGIN { other = b - o; if (other < 0) other = 0
             printf "%.0f%%", 100 * other / ((t1 - t0) * hz * cores) }'
}
