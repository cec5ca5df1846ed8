#!/usr/bin/env bash
# rtrain pod entrypoint: authorized keys, a pinned host key, the pod's env for SSH sessions, the
# optional watchdog, then sshd in the foreground (the container lives as long as sshd does).
#
# Environment it reads (all optional):
#   PUBLIC_KEY, SSH_PUBLIC_KEY   authorized public keys, one per line (RunPod sets PUBLIC_KEY from the
#                                account; rtrain passes the job's key). Both are honoured.
#   RTRAIN_SSH_HOST_KEY          an OpenSSH ed25519 private key: becomes the only host key, so the
#                                launcher's very first connection checks a key it already knows.
#   RTRAIN_SSH_USER              a second account to authorize the same keys for (e.g. "trainer").
#   RTRAIN_SSHD_LISTEN           sshd ListenAddress (default: every address, port 22).
#   RTRAIN_WORKSPACE             the working folder (default /workspace); the watchdog looks under it.
# Values may hold real newlines or literal "\n" (some consoles cannot enter multi-line env values).
set -euo pipefail

log() { printf '[start] %s\n' "$*" >&2; }

SSH_ETC=/etc/ssh
CONFIG="$SSH_ETC/rtrain_sshd_config"
HOST_KEY="$SSH_ETC/ssh_host_ed25519_key"
ENV_FILE=/etc/profile.d/rtrain-pod-env.sh  # login shells read it; ~/.bashrc sources it too
WORKSPACE="${RTRAIN_WORKSPACE:-/workspace}"
SECRET_VARS="PUBLIC_KEY SSH_PUBLIC_KEY RTRAIN_SSH_HOST_KEY RTRAIN_WATCHDOG_API_KEY"

# Turn literal "\n" into newlines when the value has no real newline.
unescape() {
  local value="$1"
  if [[ "$value" != *$'\n'* && "$value" == *'\n'* ]]; then
    value="${value//\\n/$'\n'}"
  fi
  printf '%s' "$value"
}

authorize_keys() {
  local user="$1" keys="$2" home dir
  home=$(getent passwd "$user" | cut -d: -f6)
  if [ -z "$home" ]; then
    log "no such user $user: not authorizing keys for it"
    return 0
  fi
  dir="$home/.ssh"
  install -d -m 0700 -o "$user" -g "$(id -gn "$user")" "$dir"
  printf '%s\n' "$keys" > "$dir/authorized_keys"
  chown "$user:$(id -gn "$user")" "$dir/authorized_keys"
  chmod 0600 "$dir/authorized_keys"
  log "authorized $(grep -c . "$dir/authorized_keys") key(s) for $user"
}

setup_authorized_keys() {
  local keys
  keys=$(printf '%s\n%s\n' "$(unescape "${PUBLIC_KEY:-}")" "$(unescape "${SSH_PUBLIC_KEY:-}")" \
    | sed 's/\r$//' | grep -E '^(ssh-|ecdsa-|sk-)' | sort -u || true)
  if [ -z "$keys" ]; then
    log "no PUBLIC_KEY or SSH_PUBLIC_KEY: sshd starts, but nobody can log in"
    keys=""
  fi
  authorize_keys root "$keys"
  if [ -n "${RTRAIN_SSH_USER:-}" ] && [ "$RTRAIN_SSH_USER" != root ]; then
    authorize_keys "$RTRAIN_SSH_USER" "$keys"
  fi
}

setup_host_key() {
  mkdir -p "$SSH_ETC"
  local injected
  injected=$(unescape "${RTRAIN_SSH_HOST_KEY:-}")
  if [ -n "$injected" ]; then
    # The launcher pinned this key: it must be the only one a client can be offered.
    rm -f "$SSH_ETC"/ssh_host_*_key "$SSH_ETC"/ssh_host_*_key.pub
    (umask 077 && printf '%s\n' "$injected" > "$HOST_KEY")
    if ssh-keygen -y -f "$HOST_KEY" > "$HOST_KEY.pub" 2>/dev/null \
       && grep -q '^ssh-ed25519 ' "$HOST_KEY.pub"; then
      log "installed the injected ed25519 host key ($(ssh-keygen -l -f "$HOST_KEY.pub" | cut -d' ' -f2))"
      return 0
    fi
    log "RTRAIN_SSH_HOST_KEY is not an OpenSSH ed25519 private key: generating one (the launcher will refuse it)"
    rm -f "$HOST_KEY" "$HOST_KEY.pub"
  fi
  if [ ! -s "$HOST_KEY" ]; then
    ssh-keygen -q -t ed25519 -N '' -f "$HOST_KEY"
    log "generated an ed25519 host key ($(ssh-keygen -l -f "$HOST_KEY.pub" | cut -d' ' -f2))"
  fi
}

write_sshd_config() {
  {
    echo "# written by rtrain's start.sh"
    if [ -n "${RTRAIN_SSHD_LISTEN:-}" ]; then echo "ListenAddress $RTRAIN_SSHD_LISTEN"; fi
    echo "HostKey $HOST_KEY"
    echo "PermitRootLogin prohibit-password"
    echo "PubkeyAuthentication yes"
    echo "PasswordAuthentication no"
    echo "KbdInteractiveAuthentication no"
    echo "PermitEmptyPasswords no"
    echo "AuthenticationMethods publickey"
    echo "AuthorizedKeysFile .ssh/authorized_keys"
    echo "UsePAM no"
    echo "PermitUserEnvironment no"
    echo "X11Forwarding no"
    echo "ClientAliveInterval 30"
    echo "ClientAliveCountMax 6"
    echo "MaxStartups 30:50:100"
    echo "Subsystem sftp internal-sftp"
  } > "$CONFIG"
  chmod 0644 "$CONFIG"
}

# sshd gives sessions a bare environment: write the pod's env (minus the keys) where every shell reads it.
export_env_for_sessions() {
  local name skip
  mkdir -p /etc/profile.d
  (
    umask 077
    : > "$ENV_FILE"
    while IFS= read -r name; do
      case "$name" in HOME|PWD|OLDPWD|SHLVL|HOSTNAME|TERM|_|SHELL|USER|LOGNAME) continue ;; esac
      skip=0
      for secret in $SECRET_VARS; do [ "$name" = "$secret" ] && skip=1; done
      [ "$skip" = 1 ] && continue
      printf 'export %s=%q\n' "$name" "${!name}" >> "$ENV_FILE"
    done < <(compgen -e)
  )
  chmod 0644 "$ENV_FILE"
  local hook=". $ENV_FILE  # rtrain: the pod's environment"
  # Non-interactive `ssh host cmd` runs bash without a profile, but bash reads ~/.bashrc when sshd
  # starts it: put the hook first there, before any "not interactive, return" guard.
  if ! grep -qF "$ENV_FILE" /root/.bashrc 2>/dev/null; then
    { printf '%s\n' "$hook"; cat /root/.bashrc 2>/dev/null || true; } > /root/.bashrc.rtrain
    cat /root/.bashrc.rtrain > /root/.bashrc
    rm -f /root/.bashrc.rtrain
  fi
  log "exported $(grep -c . "$ENV_FILE") environment variables for SSH sessions"
}

start_watchdog() {
  if command -v watchdog.sh >/dev/null 2>&1; then
    mkdir -p "$WORKSPACE/rtrain"
    nohup watchdog.sh "$WORKSPACE/rtrain/jobs" >> "$WORKSPACE/rtrain/watchdog.log" 2>&1 < /dev/null &
    log "watchdog started (idle until a job arms it)"
  fi
}

main() {
  log "rtrain pod starting"
  mkdir -p /run/sshd "$WORKSPACE"
  chmod 0755 /run/sshd
  setup_authorized_keys
  setup_host_key
  write_sshd_config
  export_env_for_sessions
  start_watchdog
  /usr/sbin/sshd -t -f "$CONFIG"
  log "starting sshd ${RTRAIN_SSHD_LISTEN:-on port 22}"
  exec /usr/sbin/sshd -D -e -f "$CONFIG"
}

main "$@"
