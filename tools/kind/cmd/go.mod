// Small static programs for the local kind images (standard library only):
// demo-app (the demo workload) and pause (the pod sandbox image).
module podkeeper.dev/tools/kind/cmd

go 1.26.0
