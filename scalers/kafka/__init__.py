"""The `kafka` trigger (KEDA's consumer-group lag) and its shared per-cluster client.

Nothing is imported here: the registry loads `scalers.kafka.scaler:KafkaScaler` by name, so the
broker library (aiokafka) is imported only when a `kafka` trigger is built. The modules:

* `scaler`: `KafkaScaler`: metric, sample, push wake-ups;
* `config`: the trigger's parameters, their checks, and the cluster settings they give;
* `lag`: KEDA's lag arithmetic, pure;
* `settings`: `KafkaSettings`, how to reach one cluster (the shared client's key);
* `cluster`: `KafkaCluster`, the shared client, wiring the pieces below;
* `rounds`: the per-tick rounds (every sample of a short window answered by one round);
* `watcher`: the end-offset watcher behind push;
* `offsets`: the committed- and latest-offset reads, batched by broker;
* `caches`: the watched topics' metadata and the group coordinators;
* `connections`: one connection per broker;
* `counters`: what a cluster has sent (for benchmarks and tests);
* `protocol`: the wire structs aiokafka lacks and the fast OffsetFetch v8 codecs;
* `failures`: why a piece of a round is missing.
"""
