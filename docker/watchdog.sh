#!/usr/bin/env bash
# rtrain's pod watchdog: ends an abandoned pod so that it stops billing.
#
#   watchdog.sh JOBS_DIR [--once]
#
# Off unless a job arms it: the launcher writes JOBS_DIR/<job>/watchdog holding a number of seconds.
# When that job has finished (exit_code exists) and nobody has followed it for that long (the newer
# of exit_code and .followed, which every follow poll touches), the pod ends itself:
#   1. `runpodctl remove pod $RUNPOD_POD_ID` where runpodctl and RUNPOD_POD_ID are present;
#   2. else RunPod's GraphQL podTerminate with RTRAIN_WATCHDOG_API_KEY (a key given for that purpose;
#      RTRAIN_WATCHDOG_API_URL overrides the endpoint).
# It checks every RTRAIN_WATCHDOG_INTERVAL seconds (default 60) and retries until the pod is gone.
set -euo pipefail

log() { printf '[watchdog] %s %s\n' "$(date -u +%FT%TZ)" "$*" >&2; }

JOBS_DIR="${1:?usage: watchdog.sh JOBS_DIR [--once]}"
ONCE="${2:-}"
INTERVAL="${RTRAIN_WATCHDOG_INTERVAL:-60}"

mtime() { stat -c %Y "$1" 2>/dev/null || echo 0; }

# Prints the job that has been abandoned longest past its limit, if any.
abandoned_job() {
  local dir limit last followed now
  now=$(date +%s)
  for dir in "$JOBS_DIR"/*/; do
    if [ ! -f "$dir/watchdog" ] || [ ! -f "$dir/exit_code" ]; then continue; fi
    limit=$(tr -dc '0-9' < "$dir/watchdog")
    [ -n "$limit" ] || continue
    last=$(mtime "$dir/exit_code")
    followed=$(mtime "$dir/.followed")
    [ "$followed" -gt "$last" ] && last=$followed
    if [ $((now - last)) -ge "$limit" ]; then
      basename "$dir"
      return 0
    fi
  done
  return 1
}

end_pod() {
  local pod="${RUNPOD_POD_ID:-}"
  if [[ ! "$pod" =~ ^[A-Za-z0-9_-]+$ ]]; then
    log "cannot end this pod: RUNPOD_POD_ID is not set"
    return 1
  fi
  if command -v runpodctl > /dev/null 2>&1; then
    runpodctl remove pod "$pod" && return 0
    log "runpodctl remove pod $pod failed"
  fi
  if [ -n "${RTRAIN_WATCHDOG_API_KEY:-}" ]; then
    local body
    # shellcheck disable=SC2016  # $input is a GraphQL variable, not a shell one
    body=$(printf '{"query": "mutation Terminate($input: PodTerminateInput!) { podTerminate(input: $input) }", "variables": {"input": {"podId": "%s"}}}' "$pod")
    # The key goes in a header read from a file descriptor, never on the command line (ps shows it).
    if curl -fsS -X POST "${RTRAIN_WATCHDOG_API_URL:-https://api.runpod.io/graphql}" \
         -H 'Content-Type: application/json' \
         -H @<(printf 'Authorization: Bearer %s\n' "$RTRAIN_WATCHDOG_API_KEY") \
         --data "$body" > /dev/null; then
      return 0
    fi
    log "the API refused to terminate $pod"
  fi
  return 1
}

log "watching $JOBS_DIR every ${INTERVAL}s"
while true; do
  if job=$(abandoned_job); then
    log "job $job finished and nobody followed it: ending pod ${RUNPOD_POD_ID:-?}"
    if end_pod; then
      log "pod end requested"
      exit 0
    fi
  fi
  [ "$ONCE" = "--once" ] && exit 1
  sleep "$INTERVAL"
done
