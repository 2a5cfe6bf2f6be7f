-- Trino (Hive connector) DDL for cfn-metrics cold storage, PREFIX/host=HOST/dt=YYYY-MM-DD/.
-- Not tested here (no Trino on a test machine): checked by reading only. Replace BUCKET/PREFIX.
CREATE TABLE hive.metrics.cfn_records (
  "timestamp" varchar,
  agent varchar,
  metric varchar,
  "value" double,
  unit varchar,
  tags map(varchar, varchar),
  host varchar,
  dt varchar
)
WITH (
  external_location = 's3://BUCKET/PREFIX/',
  format = 'JSON',
  partitioned_by = ARRAY['host', 'dt']
);
-- New days appear as partitions after: CALL hive.system.sync_partition_metadata('metrics', 'cfn_records', 'ADD');
