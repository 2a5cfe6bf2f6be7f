-- A host's local archive (cfn-archive's day files, plain and gzipped) as DuckDB views with the
-- same columns as cold.sql's. Needs: SET VARIABLE cfn_archive = '/var/lib/cfn-metrics/archive';
-- and SET VARIABLE cfn_host = 'web-1'; (the host column). The day comes from each file's
-- name (cfn-metrics-YYYYMMDD-N.jsonl[.gz]), so a filter on dt skips whole files.

CREATE OR REPLACE VIEW cfn_archive_records AS
SELECT CAST(getvariable('cfn_host') AS VARCHAR) AS host,
       CAST(strptime(regexp_extract(filename, 'cfn-metrics-([0-9]{8})-[0-9]+\.jsonl', 1), '%Y%m%d') AS DATE) AS dt,
       "timestamp", agent, metric, "value", unit, tags
FROM read_json(
    getvariable('cfn_archive') || '/cfn-metrics-*.jsonl*',
    format = 'newline_delimited',
    filename = true,
    columns = {
        'timestamp': 'TIMESTAMPTZ',
        'agent': 'VARCHAR',
        'metric': 'VARCHAR',
        'value': 'DOUBLE',
        'unit': 'VARCHAR',
        'tags': 'JSON'
    }
);

CREATE OR REPLACE VIEW cfn_archive_records_tags AS
SELECT host, dt, "timestamp", agent, metric, "value", unit,
       CAST(tags AS MAP(VARCHAR, VARCHAR)) AS tags
FROM cfn_archive_records;
