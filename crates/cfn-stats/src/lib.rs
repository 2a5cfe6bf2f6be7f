//! The statistic of a group of values (`stats`: exact values, an exact table, then a
//! t-digest, within a memory budget) and exponential buckets (`exponential`: Prometheus
//! native histograms and OTLP exponential histograms), shared by cfn-agg, cfn-serve and the
//! exporters; and the grouping (`group`: the `Aggregator`) cfn-agg and cfn-serve share.

pub mod exponential;
pub mod group;
pub mod stats;
