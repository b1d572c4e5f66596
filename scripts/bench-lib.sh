# Helpers shared by the benchmark scripts (bench-nbd, bench-nbd-ab, bench-write-storm); sourced, not run.

# free_ports N: N distinct free loopback TCP ports, on one line.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# wait_for_node HTTP_PORT PID LOG: returns once the node answers GET /v1/volumes (at most 60 s); fails, printing the
# log's tail, if process PID exits first or the node never answers.
wait_for_node() {
  local port=$1 pid=$2 log=$3
  for _ in $(seq 300); do
    curl -sf --max-time 2 "http://127.0.0.1:$port/v1/volumes" >/dev/null 2>&1 && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -20 "$log" >&2
      echo "lockstep serve (pid $pid) exited before it answered on port $port" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "lockstep serve (pid $pid) did not answer on port $port within 60 s (log: $log)" >&2
  return 1
}
