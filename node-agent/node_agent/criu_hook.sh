#!/bin/sh
# podmigrate's CRIU action script. Installed in a node's CRIU configuration (/etc/criu/runc.conf,
# or the file CRIU_CONFIG_FILE / the org.criu.config annotation names):
#     action-script /path/to/criu_hook.sh
# CRIU runs it at every stage of every dump and restore; it acts at two of them and exits 0 for
# everything it was not asked to do (a failing script fails the dump or restore).
#
# post-dump: stop a container's processes at the end of its dump. The images are written, the
#   tasks still seized (none can run). Only for a container the podmigrate agent armed (a file
#   named after the container ID in the hook directory): SIGSTOP to every task of its cgroup,
#   which they take as CRIU lets them go, listed in <id>.stopped for the agent. Any other
#   checkpoint (forensic, periodic, someone else's) is left alone. See node_agent/dumphook.py.
#
# pre-restore: move a migrated pod's emptyDir data into the new pod before any process is
#   restored. The agent staged it under $PODMIGRATE_VOLUME_DIR/<namespace>/<pod>/<volume>/, keyed by
#   the pod that was checkpointed (PODMIGRATE_RESTORED_FROM in the container's environment, set by the
#   control service); the kubelet has already made the new pod's emptyDir directories. The new pod
#   (namespace, UID) and its directory come from the container's OCI config (the bundle runc
#   restores from). Entries
#   are moved (a rename when staging and kubelet share a filesystem), then .restored-<uid> tells
#   the control service the data is in. A failure here fails the restore, with the reason.
#   See node_agent/volumedata.py.
pre_restore() {
	vdir="${PODMIGRATE_VOLUME_DIR:-/var/lib/podmigrate/restore-volumes}"
	[ -d "$vdir" ] || return 0
	# runc restore ... --bundle <dir> <id>: the closest ancestor whose command line says so.
	pid=$PPID bundle=
	while [ -n "$pid" ] && [ "$pid" -gt 1 ]; do
		bundle=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | sed -n -e 's/^--bundle=//p' -e '/^--bundle$/{n;p;}' | head -n 1)
		[ -n "$bundle" ] && break
		pid=$(sed -n 's/^PPid:[[:space:]]*//p' "/proc/$pid/status" 2>/dev/null)
	done
	cfg="$bundle/config.json"
	[ -f "$cfg" ] || return 0
	# containerd's CRI names the pod io.kubernetes.cri.sandbox-*, CRI-O io.kubernetes.pod.*.
	ann() {
		grep -o "\"$1\"[[:space:]]*:[[:space:]]*\"[^\"]*\"" "$cfg" | head -n 1 | sed 's/.*:[[:space:]]*"\(.*\)"$/\1/'
	}
	ns=$(ann io.kubernetes.cri.sandbox-namespace); [ -n "$ns" ] || ns=$(ann io.kubernetes.pod.namespace)
	name=$(ann io.kubernetes.cri.sandbox-name); [ -n "$name" ] || name=$(ann io.kubernetes.pod.name)
	uid=$(ann io.kubernetes.cri.sandbox-uid); [ -n "$uid" ] || uid=$(ann io.kubernetes.pod.uid)
	[ -n "$ns" ] && [ -n "$name" ] && [ -n "$uid" ] || return 0
	# The pod that was checkpointed: PODMIGRATE_RESTORED_FROM=<namespace>/<pod> in the container's
	# environment (a ReplicaSet's replacement has a new name), else the pod's own name. Only within the
	# pod's own namespace: a pod never receives another namespace's files.
	from=$(grep -o '"PODMIGRATE_RESTORED_FROM=[^"]*"' "$cfg" | head -n 1 | sed 's/^"PODMIGRATE_RESTORED_FROM=//; s/"$//')
	case "$from" in
	"") from="$ns/$name" ;;
	"$ns"/*) ;;
	*)
		echo "podmigrate: pod $ns/$name claims files of $from, outside its namespace" >&2
		return 1
		;;
	esac
	case "${from#*/}" in
	"" | *[!a-z0-9.-]* | .*)
		echo "podmigrate: pod $ns/$name names an invalid pod $from" >&2
		return 1
		;;
	esac
	stage="$vdir/$from"
	[ -d "$stage" ] || return 0
	# Every container mounts the pod's etc-hosts (or an emptyDir) from <kubelet root>/pods/<uid>/.
	poddir=$(grep -o "\"/[^\"]*/pods/$uid/" "$cfg" | head -n 1 | tr -d '"')
	if [ -z "$poddir" ]; then
		echo "podmigrate: cannot find pod $ns/$name's directory ($uid) in $cfg" >&2
		return 1
	fi
	for vol in "$stage"/*/; do
		[ -d "$vol" ] || continue
		v=$(basename "$vol")
		target="${poddir}volumes/kubernetes.io~empty-dir/$v"
		if [ ! -d "$target" ]; then
			echo "podmigrate: emptyDir $v of pod $ns/$name is not at $target" >&2
			return 1
		fi
		if ! find "$vol" -mindepth 1 -maxdepth 1 -exec mv -f -t "$target" {} + >&2; then
			echo "podmigrate: moving emptyDir $v of pod $ns/$name into $target failed" >&2
			return 1
		fi
	done
	: >"$stage/.restored-$uid"
}
if [ "$CRTOOLS_SCRIPT_ACTION" = "pre-restore" ]; then
	pre_restore || exit 1
	exit 0
fi
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
