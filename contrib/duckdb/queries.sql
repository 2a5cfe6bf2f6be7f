-- Example queries over cfn_records (cold.sql); the same work on cfn_archive_records.
-- Quantiles: quantile_cont interpolates between neighbours, cfn-agg takes the nearest rank,
-- so the two differ by at most one rank (plus cfn-agg's 0.1% in rank past 1,000 values).

-- Per host and day: count, sum, min, max, p50/p95/p99 of one metric.
SELECT host, dt, count(*) AS count, sum("value") AS sum, min("value") AS min, max("value") AS max,
       quantile_cont("value", 0.5) AS p50, quantile_cont("value", 0.95) AS p95,
       quantile_cont("value", 0.99) AS p99
FROM cfn_records
WHERE metric = 'coordination.time' AND dt BETWEEN DATE '2026-10-01' AND DATE '2026-10-30'
GROUP BY host, dt ORDER BY p99 DESC LIMIT 10;

-- Silent agents: agents whose last record is more than an hour older than their host's last.
SELECT host, agent, max("timestamp") AS last_seen
FROM cfn_records
WHERE dt >= current_date - 2
GROUP BY host, agent
HAVING max("timestamp") < (SELECT max("timestamp") FROM cfn_records r WHERE r.host = cfn_records.host) - INTERVAL 1 HOUR
ORDER BY last_seen;

-- The top agents by records over a week.
SELECT host, agent, count(*) AS records
FROM cfn_records
WHERE dt >= current_date - 7
GROUP BY host, agent ORDER BY records DESC LIMIT 20;

-- One tag's values, with the MAP view.
SELECT tags['phase'] AS phase, count(*) FROM cfn_records_tags GROUP BY ALL ORDER BY 2 DESC;
