//! `--sorted`: a k-way merge of inputs that are each in time order.

use cfn_core::filter::RecordFilter;
use cfn_core::reader::{MalformedLog, RecordReader};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufRead, Write};

/// Writes the selected records of every reader in timestamp order (ties keep input order).
///
/// # Errors
/// I/O errors, and malformed lines under `--strict`.
pub fn merge_sorted<R: BufRead>(
    mut readers: Vec<RecordReader<R>>,
    filter: &RecordFilter,
    log: &mut MalformedLog,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    // Each reader's current record, owned, since readers advance independently.
    let mut heads: Vec<Vec<u8>> = vec![Vec::new(); readers.len()];
    let mut heap = BinaryHeap::new();
    for i in 0..readers.len() {
        if let Some(ts) = advance(&mut readers[i], filter, log, &mut heads[i])? {
            heap.push(Reverse((ts, i)));
        }
    }
    while let Some(Reverse((_, i))) = heap.pop() {
        out.write_all(&heads[i])?;
        out.write_all(b"\n")?;
        if let Some(ts) = advance(&mut readers[i], filter, log, &mut heads[i])? {
            heap.push(Reverse((ts, i)));
        }
    }
    Ok(())
}

/// Moves `reader` to its next selected record, copying it into `head`.
fn advance<R: BufRead>(
    reader: &mut RecordReader<R>,
    filter: &RecordFilter,
    log: &mut MalformedLog,
    head: &mut Vec<u8>,
) -> anyhow::Result<Option<i64>> {
    loop {
        let got = reader.next_with(log, |rec| {
            if filter.matches(&rec) {
                head.clear();
                head.extend_from_slice(rec.raw);
                Some(rec.ts_ms)
            } else {
                None
            }
        })?;
        match got {
            None => return Ok(None),
            Some(Some(ts)) => return Ok(Some(ts)),
            Some(None) => {}
        }
    }
}
