//! Aggregating one input on several threads with the output of one.
//!
//! The input is read in blocks cut at line boundaries; worker threads parse the lines of a
//! block (the expensive part) into the parts the aggregator needs, and the calling thread
//! folds the blocks in input order. So every record reaches the statistic in the same order
//! as in a single-threaded run, and the output is identical, digests and compensated sums
//! included; malformed lines are reported in order with their line numbers.
//!
//! The legacy pretty-printed format spans lines, so a block holding a lone `{` line hands
//! the rest of the input to the sequential reader, from the start of that block.

use crate::{Aggregator, RecordParts, add_all};
use cfn_core::filter::RecordFilter;
use cfn_core::reader::{MAX_LINE_BYTES, MalformedLog, Position, RecordReader, parse_record};
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// Bytes read at a time (a block holds whole lines only). With one block per thread plus
/// one in flight, the parallel reader adds a few MB to the statistic's memory bounds.
const BLOCK: usize = 512 << 10;

/// One record of a parsed block; strings are ranges into the block's text.
#[derive(Debug)]
struct Parsed {
    metric: (u32, u32),
    agent: Option<(u32, u32)>,
    unit: Option<(u32, u32)>,
    tags: Vec<Option<String>>,
    value: f64,
    ts_ms: i64,
}

/// What a worker made of a block.
#[derive(Debug, Default)]
struct Block {
    /// The block's bytes, handed back (for the sequential fallback) or reused.
    bytes: Vec<u8>,
    text: Vec<u8>,
    records: Vec<Parsed>,
    /// (line index in the block, reason), in order.
    malformed: Vec<(u64, String)>,
    lines: u64,
    /// A lone `{`: a legacy multi-line record starts in this block.
    legacy: bool,
    /// Records and malformed lines interleaved: true = next record, false = next malformed.
    order: Vec<bool>,
}

fn push_str(text: &mut Vec<u8>, s: &str) -> (u32, u32) {
    let start = text.len() as u32;
    text.extend_from_slice(s.as_bytes());
    (start, text.len() as u32)
}

fn parse_block(bytes: Vec<u8>, last: bool, filter: &RecordFilter, tags: &[String]) -> Block {
    let mut b = Block {
        text: Vec::with_capacity(bytes.len() / 4),
        ..Default::default()
    };
    // A line longer than a block arrives cut: the sequential reader takes it from here.
    if !last && bytes.last() != Some(&b'\n') {
        b.legacy = true;
        b.bytes = bytes;
        return b;
    }
    let check = !filter.is_empty();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let (line, complete) = match memchr::memchr(b'\n', rest) {
            Some(i) => {
                let l = &rest[..=i];
                rest = &rest[i + 1..];
                (l, true)
            }
            None => {
                let l = rest;
                rest = &[];
                (l, false)
            }
        };
        let index = b.lines;
        b.lines += 1;
        let trimmed = cfn_core::reader::trim_line(line);
        if trimmed.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if complete && trimmed.trim_ascii() == b"{" {
            b.legacy = true;
            break;
        }
        if trimmed.len() > MAX_LINE_BYTES {
            b.malformed
                .push((index, format!("line is longer than {MAX_LINE_BYTES} bytes")));
            b.order.push(false);
            continue;
        }
        match parse_record(trimmed) {
            Ok(rec) => {
                if check && !filter.matches(&rec) {
                    continue;
                }
                let p = Parsed {
                    metric: push_str(&mut b.text, &rec.metric),
                    agent: rec.agent.as_deref().map(|a| push_str(&mut b.text, a)),
                    unit: rec.unit.as_deref().map(|u| push_str(&mut b.text, u)),
                    tags: tags.iter().map(|t| rec.tag(t)).collect(),
                    value: rec.value,
                    ts_ms: rec.ts_ms,
                };
                b.records.push(p);
                b.order.push(true);
            }
            Err(e) => {
                let complete = complete || !last;
                b.malformed
                    .push((index, cfn_core::reader::failure_reason(e, complete)));
                b.order.push(false);
            }
        }
    }
    b.bytes = bytes;
    b
}

/// Folds a parsed block into the aggregator, reporting its malformed lines in order.
fn fold(
    agg: &mut Aggregator,
    b: &Block,
    first_line: u64,
    source: &str,
    log: &mut MalformedLog,
) -> anyhow::Result<()> {
    let s = |r: (u32, u32)| -> &str {
        // The text holds whole UTF-8 strings copied from records.
        std::str::from_utf8(&b.text[r.0 as usize..r.1 as usize]).unwrap_or_default()
    };
    let (mut ri, mut mi) = (0, 0);
    for &is_record in &b.order {
        if is_record {
            let p = &b.records[ri];
            ri += 1;
            agg.add_parts(&RecordParts {
                metric: s(p.metric),
                agent: p.agent.map(s),
                unit: p.unit.map(s),
                tag_values: &p.tags,
                value: p.value,
                ts_ms: p.ts_ms,
            });
        } else {
            let (line, reason) = &b.malformed[mi];
            mi += 1;
            log.report(source, first_line + line + 1, reason)?;
        }
    }
    Ok(())
}

/// Reads `input` to its end on `threads` threads; see the module documentation.
///
/// # Errors
/// I/O errors, and the first malformed line when `log` is strict.
pub fn aggregate_parallel(
    agg: &mut Aggregator,
    mut input: impl Read,
    source: &str,
    filter: &RecordFilter,
    log: &mut MalformedLog,
    threads: usize,
) -> anyhow::Result<()> {
    let tags = agg.opts.by.tags.clone();
    let (job_tx, job_rx) = mpsc::sync_channel::<(u64, Vec<u8>, bool)>(threads + 1);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = mpsc::channel::<(u64, Block)>();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        for _ in 0..threads {
            let (job_rx, done_tx, tags) = (job_rx.clone(), done_tx.clone(), &tags);
            scope.spawn(move || {
                loop {
                    let job = job_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok((i, bytes, last))) = job else {
                        return;
                    };
                    if done_tx
                        .send((i, parse_block(bytes, last, filter, tags)))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        let mut next_fold = 0u64;
        let mut sent = 0u64;
        let mut waiting: BTreeMap<u64, Block> = BTreeMap::new();
        let mut line = 0u64;
        let mut carry: Vec<u8> = Vec::new();
        let mut eof = false;
        // Reads the next block (whole lines); None at the end.
        let mut read_block =
            |carry: &mut Vec<u8>, eof: &mut bool| -> std::io::Result<Option<(Vec<u8>, bool)>> {
                let mut buf = std::mem::take(carry);
                loop {
                    let start = buf.len();
                    buf.resize(start + BLOCK, 0);
                    let n = loop {
                        match input.read(&mut buf[start..]) {
                            Ok(n) => break n,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    };
                    buf.truncate(start + n);
                    if n == 0 {
                        *eof = true;
                        return Ok((!buf.is_empty()).then_some((buf, true)));
                    }
                    if let Some(nl) = memchr::memrchr(b'\n', &buf) {
                        *carry = buf.split_off(nl + 1);
                        return Ok(Some((buf, false)));
                    }
                    // A line longer than a block: hand it over cut; the block falls back to the
                    // sequential reader, which bounds it.
                    if buf.len() >= BLOCK {
                        return Ok(Some((buf, false)));
                    }
                }
            };
        let mut fallback: Option<Vec<Vec<u8>>> = None;
        loop {
            // Keep the workers busy: a block each, and one more read ahead.
            while !eof && fallback.is_none() && sent - next_fold < (threads + 1) as u64 {
                match read_block(&mut carry, &mut eof)? {
                    Some((bytes, last)) => {
                        job_tx
                            .send((sent, bytes, last))
                            .map_err(|_| anyhow::anyhow!("a parser thread stopped"))?;
                        sent += 1;
                    }
                    None => break,
                }
            }
            if next_fold == sent {
                break;
            }
            let (i, block) = done_rx
                .recv()
                .map_err(|_| anyhow::anyhow!("a parser thread stopped"))?;
            waiting.insert(i, block);
            while let Some(block) = waiting.remove(&next_fold) {
                next_fold += 1;
                match &mut fallback {
                    Some(rest) => rest.push(block.bytes),
                    None if block.legacy => fallback = Some(vec![block.bytes]),
                    None => {
                        fold(agg, &block, line, source, log)?;
                        line += block.lines;
                    }
                }
            }
        }
        drop(job_tx);
        if let Some(rest) = fallback {
            // From the block with the legacy record on, the sequential reader.
            let chained = rest
                .into_iter()
                .map(std::io::Cursor::new)
                .fold(Box::new(std::io::empty()) as Box<dyn Read>, |acc, c| {
                    Box::new(acc.chain(c))
                })
                .chain(std::io::Cursor::new(carry))
                .chain(input);
            let mut reader = RecordReader::new(
                std::io::BufReader::with_capacity(256 * 1024, chained),
                source,
            )
            .with_position(Position { offset: 0, line });
            add_all(agg, &mut reader, filter, log)?;
        }
        Ok(())
    })
}
