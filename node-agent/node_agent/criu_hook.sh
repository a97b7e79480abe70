#!/bin/sh
# podmigrate's CRIU action script: stop a container's processes at the end of its dump.
#
# Installed in a node's CRIU configuration (/etc/criu/runc.conf, or the file CRIU_CONFIG_FILE
# names in the container runtime's environment):   action-script /path/to/criu_hook.sh
# CRIU runs it at every stage of every dump and restore; it acts only on "post-dump" (the images
# are written, the tasks still seized: none of them can run), and only for a container the
# podmigrate agent armed (a file named after the container ID in the hook directory). Then it
# sends SIGSTOP to every task of the container's cgroup, which they take as CRIU lets them go,
# before returning to user space, and lists them in <id>.stopped for the agent. Any other
# checkpoint (forensic, periodic, someone else's) is left alone. See node_agent/dumphook.py.
# It always exits 0: a failing post-dump script would fail the dump.
[ "$CRTOOLS_SCRIPT_ACTION" = "post-dump" ] || exit 0
[ -n "$CRTOOLS_INIT_PID" ] || exit 0
dir="${PODMIGRATE_HOOK_DIR:-/run/podmigrate/stop-after-dump}"
[ -d "$dir" ] || exit 0
# The container's cgroup: the freezer line on cgroup v1, the unified (0::) line on v2.
cg=$(sed -n 's/^[0-9]*:freezer:\(.*\)$/\1/p' "/proc/$CRTOOLS_INIT_PID/cgroup")
if [ -n "$cg" ]; then
	procs="/sys/fs/cgroup/freezer$cg/cgroup.procs"
else
	cg=$(sed -n 's/^0::\(.*\)$/\1/p' "/proc/$CRTOOLS_INIT_PID/cgroup")
	procs="/sys/fs/cgroup$cg/cgroup.procs"
	[ -f "$procs" ] || procs="/sys/fs/cgroup/unified$cg/cgroup.procs"
fi
id=${cg##*/}
id=${id#cri-containerd-}
id=${id#crio-}
id=${id%.scope}
[ -n "$id" ] && [ -f "$dir/$id" ] || exit 0
pids=$(cat "$procs" 2>/dev/null) || exit 0
[ -n "$pids" ] || exit 0
# shellcheck disable=SC2086 # one word per PID
kill -STOP $pids 2>/dev/null
echo $pids > "$dir/$id.stopped.tmp" && mv "$dir/$id.stopped.tmp" "$dir/$id.stopped"
exit 0
