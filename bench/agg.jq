# The bash system's analysis in jq: group by metric, exact nearest-rank percentiles.
def pct($v; $q): $v[((($v | length) * $q) | ceil) - 1];
group_by(.metric)
| map(
    (map(.value) | sort) as $v
    | {
        metric: .[0].metric,
        count: ($v | length),
        sum: ($v | add),
        avg: (($v | add) / ($v | length)),
        min: $v[0],
        max: $v[-1],
        p50: pct($v; 0.5),
        p95: pct($v; 0.95),
        p99: pct($v; 0.99)
      }
  )
| .[]
