// Small static programs of the kind setup: demo-app (the demo workload), pause (the pod
// sandbox image of the local node) and zkstat (znode versions for the kind suite).
module podkeeper.dev/tools/kind/cmd

go 1.26.0

require github.com/go-zookeeper/zk v1.0.4
