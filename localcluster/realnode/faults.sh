#!/bin/sh
# Fault injection for the local cluster's real nodes, through CRIU's own action scripts (the
# real-node counterpart of the stand-in node's podmigrate.io/fail-* annotations).
# While the file "fail-restore" exists in $PODMIGRATE_FAULT_DIR (set in this node's containerd
# environment), every restore on the node fails at CRIU's pre-restore stage with its content as
# the reason, as a real restore failure would: the runtime reports it and the pod does not start.
# Nothing else is touched; the script exits 0 for every other stage.
[ "$CRTOOLS_SCRIPT_ACTION" = "pre-restore" ] || exit 0
[ -n "$PODMIGRATE_FAULT_DIR" ] && [ -f "$PODMIGRATE_FAULT_DIR/fail-restore" ] || exit 0
echo "injected restore failure: $(cat "$PODMIGRATE_FAULT_DIR/fail-restore")" >&2
exit 1
