//! Aggregating inputs on every core with the same output for any number of threads.
//!
//! The statistic is defined over fixed blocks: each input is cut every [`BLOCK`] bytes (back
//! to the last line end, so a block holds whole lines), which depends on the bytes alone, not
//! on how reads return or how many threads run. Each block is parsed and folded into an
//! aggregator of its own, on whichever thread is free; the blocks' groups are then merged into
//! the run's aggregator in input order. The same blocks merged in the same order give the
//! same digests and sums, so the output is byte for byte the same for `--threads 1` and
//! `--threads 8`. Malformed lines are reported in order with their line numbers.
//!
//! Blocks of the next input are read while the last ones of the previous are still being
//! folded, so many small shards keep every core busy.
//!
//! The legacy pretty-printed format spans lines, so a block holding a lone `{` line hands
//! the rest of its input to the sequential reader, from the start of that block.

use crate::{Aggregator, GroupPart, Options, add_all};
use cfn_core::filter::RecordFilter;
use cfn_core::reader::{MAX_LINE_BYTES, MalformedLog, Position, RecordReader, parse_record};
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// The size of a block. It defines the statistic (digests are merged per block), so it is
/// a constant, not a tuning knob; memory holds about two blocks per thread.
pub const BLOCK: usize = 4 << 20;

/// One input: its name (for messages) and its bytes.
pub type Source<'a> = (String, Box<dyn Read + 'a>);

/// What folding a block gave.
#[derive(Debug, Default)]
struct Block {
    /// The block's bytes, kept for the sequential fallback.
    bytes: Vec<u8>,
    /// The block's groups, in the order their first record came.
    parts: Vec<GroupPart>,
    /// (line index in the block, reason), in order.
    malformed: Vec<(u64, String)>,
    lines: u64,
    /// A lone `{` (a legacy multi-line record) or a line longer than a block: the
    /// sequential reader takes the input from this block on.
    legacy: bool,
}

/// Parses the lines of a block and folds them into an aggregator of the block's own.
fn fold_block(bytes: Vec<u8>, last: bool, filter: &RecordFilter, opts: &Options) -> Block {
    let mut b = Block::default();
    // A line longer than a block arrives cut: the sequential reader takes it from here.
    if !last && bytes.last() != Some(&b'\n') {
        b.legacy = true;
        b.bytes = bytes;
        return b;
    }
    // The block's records are bounded by its size, so its aggregator needs no group limit.
    let mut local = Aggregator::new(Options {
        max_groups: usize::MAX,
        ..opts.clone()
    });
    let check = !filter.is_empty();
    for (index, line) in (0u64..).zip(bytes.split_inclusive(|&c| c == b'\n')) {
        b.lines += 1;
        let complete = line.last() == Some(&b'\n');
        let trimmed = cfn_core::reader::trim_line(line);
        if trimmed.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if complete && trimmed.trim_ascii() == b"{" {
            b.legacy = true;
            b.bytes = bytes;
            return b;
        }
        if trimmed.len() > MAX_LINE_BYTES {
            let reason = format!("line is longer than {MAX_LINE_BYTES} bytes");
            b.malformed.push((index, reason));
            continue;
        }
        match parse_record(trimmed) {
            Ok(rec) => {
                if !check || filter.matches(&rec) {
                    local.add(&rec);
                }
            }
            Err(e) => {
                let reason = cfn_core::reader::failure_reason(e, complete || !last);
                b.malformed.push((index, reason));
            }
        }
    }
    b.parts = local.into_parts();
    b.bytes = bytes;
    b
}

/// Reads the next block of `reader`: exactly [`BLOCK`] bytes (fewer at the end) counting
/// the `carry` from the last one, cut back to the last line end. `Ok(None)` at the end.
fn read_block(
    reader: &mut dyn Read,
    carry: &mut Vec<u8>,
) -> std::io::Result<Option<(Vec<u8>, bool)>> {
    let mut buf = std::mem::take(carry);
    let start = buf.len();
    buf.resize(BLOCK.max(start), 0);
    let mut filled = start;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let eof = filled < buf.len();
    buf.truncate(filled);
    if eof {
        return Ok((!buf.is_empty()).then_some((buf, true)));
    }
    if let Some(nl) = memchr::memrchr(b'\n', &buf) {
        *carry = buf.split_off(nl + 1);
    }
    // No line end in a whole block: handed over cut (the fallback bounds it).
    Ok(Some((buf, false)))
}

/// The input being read into blocks.
struct Reading<'a> {
    file: usize,
    reader: Box<dyn Read + 'a>,
    carry: Vec<u8>,
}

/// An input the sequential reader finishes: its blocks from the legacy one on, then what
/// was not read into blocks yet.
struct Fallback<'a> {
    file: usize,
    line: u64,
    blocks: Vec<Vec<u8>>,
    tail: Option<Box<dyn Read + 'a>>,
}

/// Where blocks are folded: on worker threads, or (one thread) right away.
enum Workers {
    Inline(BTreeMap<u64, Block>),
    Threads {
        jobs: mpsc::SyncSender<(u64, Vec<u8>, bool)>,
        done: mpsc::Receiver<(u64, Block)>,
        waiting: BTreeMap<u64, Block>,
    },
}

impl Workers {
    fn submit(&mut self, seq: u64, bytes: Vec<u8>, last: bool, f: &RecordFilter, o: &Options) {
        match self {
            Workers::Inline(ready) => {
                ready.insert(seq, fold_block(bytes, last, f, o));
            }
            Workers::Threads { jobs, .. } => {
                // A send fails only when every worker stopped; `take` then reports it.
                let _ = jobs.send((seq, bytes, last));
            }
        }
    }

    fn take(&mut self, seq: u64) -> anyhow::Result<Block> {
        match self {
            Workers::Inline(ready) => ready
                .remove(&seq)
                .ok_or_else(|| anyhow::anyhow!("block {seq} was never read")),
            Workers::Threads { done, waiting, .. } => loop {
                if let Some(b) = waiting.remove(&seq) {
                    return Ok(b);
                }
                let (i, b) = done
                    .recv()
                    .map_err(|_| anyhow::anyhow!("a parser thread stopped"))?;
                waiting.insert(i, b);
            },
        }
    }
}

/// Reads every source to its end into `agg` on `threads` threads; see the module
/// documentation.
///
/// # Errors
/// I/O errors (opening a source included), and the first malformed line when `log` is
/// strict.
pub fn aggregate_sources<'a>(
    agg: &mut Aggregator,
    sources: impl Iterator<Item = anyhow::Result<Source<'a>>>,
    filter: &RecordFilter,
    log: &mut MalformedLog,
    threads: usize,
) -> anyhow::Result<()> {
    if threads <= 1 {
        let mut workers = Workers::Inline(BTreeMap::new());
        return Pipeline::new(agg, filter, log, threads).run(sources, &mut workers);
    }
    let opts = agg.opts.clone();
    let (job_tx, job_rx) = mpsc::sync_channel::<(u64, Vec<u8>, bool)>(threads + 1);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = mpsc::channel::<(u64, Block)>();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (job_rx, done_tx, opts) = (job_rx.clone(), done_tx.clone(), &opts);
            scope.spawn(move || {
                loop {
                    let job = job_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok((seq, bytes, last))) = job else {
                        return;
                    };
                    let block = fold_block(bytes, last, filter, opts);
                    if done_tx.send((seq, block)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        let mut workers = Workers::Threads {
            jobs: job_tx,
            done: done_rx,
            waiting: BTreeMap::new(),
        };
        // Dropping the workers (and their job sender) lets the threads end.
        Pipeline::new(agg, filter, log, threads).run(sources, &mut workers)
    })
}

/// The calling thread's side: reads blocks, hands them out, merges them back in order.
struct Pipeline<'p, 'a> {
    agg: &'p mut Aggregator,
    filter: &'p RecordFilter,
    log: &'p mut MalformedLog,
    ahead: u64,
    names: Vec<String>,
    /// The input of every block handed out and not merged yet, by sequence number.
    file_of: std::collections::VecDeque<usize>,
    /// Lines merged so far in the input being merged.
    line: u64,
    merging: usize,
    reading: Option<Reading<'a>>,
    fallback: Option<Fallback<'a>>,
    sent: u64,
    merged: u64,
}

impl<'p, 'a> Pipeline<'p, 'a> {
    fn new(
        agg: &'p mut Aggregator,
        filter: &'p RecordFilter,
        log: &'p mut MalformedLog,
        threads: usize,
    ) -> Self {
        Self {
            agg,
            filter,
            log,
            ahead: threads.max(1) as u64 + 1,
            names: Vec::new(),
            file_of: Default::default(),
            line: 0,
            merging: 0,
            reading: None,
            fallback: None,
            sent: 0,
            merged: 0,
        }
    }

    fn run(
        mut self,
        mut sources: impl Iterator<Item = anyhow::Result<Source<'a>>>,
        workers: &mut Workers,
    ) -> anyhow::Result<()> {
        let mut sources_left = true;
        loop {
            // Keep every worker busy: a block each and one more read ahead.
            while self.sent - self.merged < self.ahead {
                if self.reading.is_none() && sources_left {
                    match sources.next() {
                        Some(source) => {
                            let (name, reader) = source?;
                            self.names.push(name);
                            let file = self.names.len() - 1;
                            self.reading = Some(Reading {
                                file,
                                reader,
                                carry: Vec::new(),
                            });
                        }
                        None => sources_left = false,
                    }
                }
                let Some(r) = &mut self.reading else { break };
                match read_block(&mut r.reader, &mut r.carry)? {
                    Some((bytes, last)) => {
                        self.file_of.push_back(r.file);
                        workers.submit(self.sent, bytes, last, self.filter, &self.agg.opts);
                        self.sent += 1;
                        if last {
                            self.reading = None;
                        }
                    }
                    None => self.reading = None,
                }
            }
            if self.merged == self.sent {
                self.finish_fallback()?;
                if self.reading.is_none() && !sources_left {
                    return Ok(());
                }
                continue;
            }
            let block = workers.take(self.merged)?;
            let file = self.file_of.pop_front().unwrap_or(self.merging);
            self.merged += 1;
            self.merge(file, block)?;
        }
    }

    /// Merges the next block in input order (or keeps its bytes for the fallback).
    fn merge(&mut self, file: usize, block: Block) -> anyhow::Result<()> {
        if file != self.merging {
            self.finish_fallback()?;
            self.merging = file;
            self.line = 0;
        }
        if let Some(f) = &mut self.fallback {
            f.blocks.push(block.bytes);
            return Ok(());
        }
        if block.legacy {
            // The rest of this input goes to the sequential reader; what is still unread
            // of it is taken from the reading side now.
            let tail = match self.reading.take_if(|r| r.file == file) {
                Some(r) => {
                    let carry = std::io::Cursor::new(r.carry);
                    Some(Box::new(carry.chain(r.reader)) as Box<dyn Read + 'a>)
                }
                None => None,
            };
            self.fallback = Some(Fallback {
                file,
                line: self.line,
                blocks: vec![block.bytes],
                tail,
            });
            return Ok(());
        }
        let source = &self.names[file];
        for (line, reason) in &block.malformed {
            self.log.report(source, self.line + line + 1, reason)?;
        }
        self.line += block.lines;
        for part in block.parts {
            self.agg.merge_group_part(part);
        }
        Ok(())
    }

    /// Reads the input of a pending fallback to its end with the sequential reader.
    fn finish_fallback(&mut self) -> anyhow::Result<()> {
        let Some(f) = self.fallback.take() else {
            return Ok(());
        };
        let blocks = f.blocks.into_iter().map(std::io::Cursor::new);
        let mut chained: Box<dyn Read + 'a> = Box::new(std::io::empty());
        for b in blocks {
            chained = Box::new(chained.chain(b));
        }
        if let Some(tail) = f.tail {
            chained = Box::new(chained.chain(tail));
        }
        let buffered = std::io::BufReader::with_capacity(256 * 1024, chained);
        let mut reader =
            RecordReader::new(buffered, self.names[f.file].as_str()).with_position(Position {
                offset: 0,
                line: f.line,
            });
        add_all(self.agg, &mut reader, self.filter, self.log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns at most `n` bytes a call, like a pipe.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn blocks_depend_on_the_bytes_not_on_how_reads_return() {
        let mut text = Vec::new();
        for i in 0..600_000 {
            text.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let cut = |step: usize| {
            let mut r = Trickle(&text, step);
            let mut carry = Vec::new();
            let mut sizes = Vec::new();
            while let Some((b, _)) = read_block(&mut r, &mut carry).unwrap() {
                assert_eq!(b.last(), Some(&b'\n'));
                sizes.push(b.len());
            }
            sizes
        };
        let whole = cut(usize::MAX);
        assert!(whole.len() > 1, "{whole:?}");
        assert_eq!(whole.iter().sum::<usize>(), text.len());
        assert_eq!(cut(4096), whole);
        assert_eq!(cut(7), whole);
    }
}
