-- Athena (and Hive) DDL for cfn-metrics cold storage, PREFIX/host=HOST/dt=YYYY-MM-DD/*.jsonl.gz.
-- Not tested here (no Athena on a test machine): checked by reading only. Replace BUCKET/PREFIX.
-- Partition projection finds the partitions from the keys, so no MSCK REPAIR is needed.
CREATE EXTERNAL TABLE IF NOT EXISTS cfn_records (
  `timestamp` string,
  agent string,
  metric string,
  `value` double,
  unit string,
  tags map<string, string>
)
PARTITIONED BY (host string, dt string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
LOCATION 's3://BUCKET/PREFIX/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.host.type' = 'injected',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2026-01-01,NOW',
  'storage.location.template' = 's3://BUCKET/PREFIX/host=${host}/dt=${dt}/'
);

-- Per host and day p99 (Athena's approx_percentile; cast the timestamp where needed:
-- from_iso8601_timestamp("timestamp")).
-- SELECT host, dt, count(*), approx_percentile("value", 0.99) FROM cfn_records
-- WHERE host = 'web-1' AND dt BETWEEN '2026-10-01' AND '2026-10-30' AND metric = 'coordination.time'
-- GROUP BY host, dt;
