-- cfn-metrics cold storage as DuckDB views, read in place (contrib/duckdb/README.md).
-- Needs: SET VARIABLE cfn_cold = 's3://BUCKET/PREFIX';  (no trailing slash; the prefix given
-- to cfn-archive --upload), the httpfs extension loaded and an S3 secret (cfn-duckdb does all
-- three). Reads the Hive layout cfn-archive writes: PREFIX/host=HOST/dt=YYYY-MM-DD/*.jsonl.gz.
-- A filter on host or dt is applied to the keys before any object is fetched.
--
-- The columns are spelled out: DuckDB's guess makes `tags` a STRUCT and reads timestamps that
-- mix `…01.123Z` and `…02Z` as VARCHAR. Keys a record has beyond these are ignored.

-- Every record, tags as JSON (their values keep their types: string, number, boolean).
CREATE OR REPLACE VIEW cfn_records AS
SELECT host, dt, "timestamp", agent, metric, "value", unit, tags
FROM read_json(
    getvariable('cfn_cold') || '/host=*/dt=*/*.jsonl.gz',
    format = 'newline_delimited',
    compression = 'gzip',
    hive_partitioning = true,
    hive_types = {'host': 'VARCHAR', 'dt': 'DATE'},
    columns = {
        'timestamp': 'TIMESTAMPTZ',
        'agent': 'VARCHAR',
        'metric': 'VARCHAR',
        'value': 'DOUBLE',
        'unit': 'VARCHAR',
        'tags': 'JSON'
    }
);

-- The same records, tags as MAP(VARCHAR, VARCHAR): tags['phase'] = 'consensus'.
CREATE OR REPLACE VIEW cfn_records_tags AS
SELECT host, dt, "timestamp", agent, metric, "value", unit,
       CAST(tags AS MAP(VARCHAR, VARCHAR)) AS tags
FROM cfn_records;
