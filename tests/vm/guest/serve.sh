#!/bin/sh
# The harness's command channel on ttyS1 (a UNIX socket on the host side).
# Request:  RUN <id> <base64 of a shell script>
# Reply:    @@BEGIN <id> / the script's output / @@END <id> <exit code>
# HELLO is answered with @@READY <hostname> (the host may connect after the first one).
tty=/dev/ttyS1
stty -F "$tty" raw -echo
exec 0<"$tty" 1>"$tty" 2>/dev/console
echo "@@READY $(hostname)"
while IFS= read -r line; do
  case $line in
    HELLO*) echo "@@READY $(hostname)" ;;
    RUN\ *)
      set -- $line
      id=$2
      printf '%s' "$3" | base64 -d >"/tmp/cmd.$id.sh"
      sh "/tmp/cmd.$id.sh" </dev/null >"/tmp/out.$id" 2>&1
      rc=$?
      echo "@@BEGIN $id"
      cat "/tmp/out.$id"
      echo
      echo "@@END $id $rc"
      rm -f "/tmp/cmd.$id.sh" "/tmp/out.$id"
      ;;
  esac
done
echo "serve.sh: command channel closed" >/dev/console
while :; do sleep 3600; done
