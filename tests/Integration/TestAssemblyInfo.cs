// Multi-node clusters, real processes and fio runs compete for this machine's two cores; run
// test classes one after another so failure detectors and deadlines measure the code, not the load.
[assembly: Xunit.CollectionBehavior(DisableTestParallelization = true)]
