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
//! A block with more than [`MAX_BLOCK_GROUPS`] groups (grouped by agent, say) is not folded
//! on its own: an aggregator per block would hold its thousands of groups again. Its
//! records are parsed on the worker and added to the run's aggregator in order, as before
//! blocks were folded. Which way a block goes depends on its bytes only, so the output is
//! still the same for any thread count.
//!
//! The legacy pretty-printed format spans lines, so the reading side hands the input from a
//! block holding a lone `{` line (or a line longer than a block) to the sequential reader;
//! a block handed to a worker is never needed again, and its bytes are freed once parsed.

use crate::add_all;
use cfn_core::filter::RecordFilter;
use cfn_core::reader::{MAX_LINE_BYTES, MalformedLog, Position, RecordReader, parse_record};
use cfn_stats::group::{Aggregator, GroupPart, Options, RecordParts};
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// The size of a block. It defines the statistic (digests are merged per block), so it is
/// a constant, not a tuning knob; memory holds about one block per thread plus one.
pub const BLOCK: usize = 1 << 20;

/// Most groups a block is folded into on its own; past it, its records are added in order.
pub const MAX_BLOCK_GROUPS: usize = 1_000;

/// One input: its name (for messages) and its bytes.
pub type Source<'a> = (String, Box<dyn Read + 'a>);

/// One record of a block in records mode; strings are ranges into the block's text.
#[derive(Debug)]
struct Parsed {
    metric: (u32, u32),
    agent: Option<(u32, u32)>,
    unit: Option<(u32, u32)>,
    tags: Vec<Option<String>>,
    value: f64,
    ts_ms: i64,
}

/// What a worker made of a block: its groups, then (past [`MAX_BLOCK_GROUPS`]) the records
/// that would have made more.
#[derive(Debug, Default)]
struct Block {
    /// The block's groups, in the order their first record came.
    parts: Vec<GroupPart>,
    /// Records mode: the records, their strings in `text`.
    records: Vec<Parsed>,
    text: Vec<u8>,
    /// (line index in the block, reason), in order.
    malformed: Vec<(u64, String)>,
    lines: u64,
    /// Who wrote the block's records (`--presence`).
    presence: Option<cfn_core::presence::Table>,
}

/// The lines of `bytes`, each with its newline (the last one may have none), found with
/// memchr: a closure per byte would cost more than parsing on this path.
fn lines_of(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(end);
        rest = tail;
        Some(line)
    })
}

/// The lines of a block with their index, whether they end with a newline, and their text
/// without the line end; blank lines skipped, overlong ones reported.
fn for_each_line(
    bytes: &[u8],
    last: bool,
    b: &mut Block,
    mut f: impl FnMut(u64, &[u8], bool, &mut Block),
) {
    for (index, line) in (0u64..).zip(lines_of(bytes)) {
        b.lines += 1;
        let complete = line.last() == Some(&b'\n');
        let trimmed = cfn_core::reader::trim_line(line);
        if trimmed.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if trimmed.len() > MAX_LINE_BYTES {
            let reason = format!("line is longer than {MAX_LINE_BYTES} bytes");
            b.malformed.push((index, reason));
            continue;
        }
        f(index, trimmed, complete || !last, b);
    }
}

/// Parses the lines of a block and folds them into an aggregator of the block's own; from
/// the record that would make [`MAX_BLOCK_GROUPS`] + 1 groups on, hands the records over for
/// the calling thread to add in order, after the groups of the ones before.
fn fold_block(bytes: Vec<u8>, last: bool, filter: &RecordFilter, opts: &Options) -> Block {
    // Bounded by MAX_BLOCK_GROUPS: one group more and the rest of the block is records.
    let mut local = Aggregator::new(Options {
        max_groups: MAX_BLOCK_GROUPS,
        ..opts.clone()
    });
    let check = !filter.is_empty();
    let tags = &opts.by.tags;
    let mut b = Block::default();
    let mut records_mode = false;
    for_each_line(&bytes, last, &mut b, |index, line, complete, b| {
        match parse_record(line) {
            Ok(rec) => {
                if check && !filter.matches(&rec) {
                    return;
                }
                if !records_mode {
                    local.add(&rec);
                    if local.dropped() == 0 {
                        return;
                    }
                    // Left out of `local`: this record and the rest go as records.
                    records_mode = true;
                    b.text.reserve(bytes.len() / 4);
                } else {
                    local.observe(&rec);
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
            }
            Err(e) => {
                let reason = cfn_core::reader::failure_reason(e, complete);
                b.malformed.push((index, reason));
            }
        }
    });
    b.presence = local.take_presence();
    b.parts = local.into_parts();
    b
}

impl Parsed {
    /// The record as the aggregator takes it; `text` is its block's.
    fn parts<'t>(&'t self, text: &'t [u8]) -> RecordParts<'t> {
        let s = |r: (u32, u32)| -> &'t str {
            // The text holds whole UTF-8 strings copied from records.
            std::str::from_utf8(&text[r.0 as usize..r.1 as usize]).unwrap_or_default()
        };
        RecordParts {
            metric: s(self.metric),
            agent: self.agent.map(s),
            unit: self.unit.map(s),
            tag_values: &self.tags,
            value: self.value,
            ts_ms: self.ts_ms,
        }
    }
}

fn push_str(text: &mut Vec<u8>, s: &str) -> (u32, u32) {
    let start = text.len() as u32;
    text.extend_from_slice(s.as_bytes());
    (start, text.len() as u32)
}

/// True when the sequential reader must take a block: it holds a lone `{` line (a legacy
/// multi-line record), or, not being the last, no line end at all (a line longer than a
/// block).
fn needs_sequential_reader(bytes: &[u8], last: bool) -> bool {
    if !last && memchr::memchr(b'\n', bytes).is_none() {
        return true;
    }
    has_lone_brace_line(bytes)
}

/// True when a line of `bytes` is `{` alone (blanks around it allowed). Such a line holds a
/// `{` followed by a blank or the line's end, which a JSONL record never has right after its
/// opening brace: a few vectorised searches find those few places, instead of a look at
/// every line (5% of cfn-agg's CPU, on the thread that reads and merges).
fn has_lone_brace_line(bytes: &[u8]) -> bool {
    let lone_at = |brace: usize| {
        let start = memchr::memrchr(b'\n', &bytes[..brace]).map_or(0, |i| i + 1);
        let end = memchr::memchr(b'\n', &bytes[brace..]).map_or(bytes.len(), |i| brace + i);
        bytes[start..end].trim_ascii() == b"{"
    };
    if bytes.last() == Some(&b'{') && lone_at(bytes.len() - 1) {
        return true;
    }
    [&b"{\n"[..], b"{ ", b"{\t", b"{\r", b"{\x0c"]
        .iter()
        .any(|pat| memchr::memmem::find_iter(bytes, pat).any(lone_at))
}

/// Reads the next block of `reader`: exactly [`BLOCK`] bytes (fewer at the end) counting
/// the `carry` from the last one, cut back to the last line end. `Ok(None)` at the end.
fn read_block(
    reader: &mut dyn Read,
    carry: &mut Vec<u8>,
) -> std::io::Result<Option<(Vec<u8>, bool)>> {
    let mut buf = std::mem::take(carry);
    let want = BLOCK.max(buf.len());
    buf.reserve_exact(want - buf.len());
    // Read into the spare capacity (no zeroing a block first: 2% of the CPU) until the
    // block is full or the input ends.
    while buf.len() < want {
        let room = (want - buf.len()) as u64;
        match (&mut *reader).take(room).read_to_end(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let eof = buf.len() < want;
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

/// The rest of an input, from a block the sequential reader must take: that block, then
/// what was not read into blocks yet.
struct Tail<'a> {
    file: usize,
    rest: Box<dyn Read + 'a>,
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
    let opts = agg.options().clone();
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
    /// Inputs whose rest the sequential reader takes, at their place in the sequence.
    tails: BTreeMap<u64, Tail<'a>>,
    /// Lines merged so far in the input being merged.
    line: u64,
    merging: usize,
    reading: Option<Reading<'a>>,
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
            tails: BTreeMap::new(),
            line: 0,
            merging: 0,
            reading: None,
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
                if !self.read_one(workers)? {
                    break;
                }
            }
            if self.merged == self.sent {
                if self.reading.is_none() && !sources_left {
                    return Ok(());
                }
                continue;
            }
            let seq = self.merged;
            self.merged += 1;
            let file = self.file_of.pop_front().unwrap_or(self.merging);
            if file != self.merging {
                self.merging = file;
                self.line = 0;
            }
            match self.tails.remove(&seq) {
                Some(tail) => self.read_tail(tail)?,
                None => {
                    let block = workers.take(seq)?;
                    self.merge(file, block)?;
                }
            }
        }
    }

    /// Reads the next block of the input being read and hands it out (or, when the
    /// sequential reader must take it, queues the input's rest). False when no input is
    /// being read.
    fn read_one(&mut self, workers: &mut Workers) -> anyhow::Result<bool> {
        let Some(r) = &mut self.reading else {
            return Ok(false);
        };
        let file = r.file;
        match read_block(&mut r.reader, &mut r.carry)? {
            Some((bytes, last)) if needs_sequential_reader(&bytes, last) => {
                let Some(r) = self.reading.take() else {
                    return Ok(false);
                };
                let rest = std::io::Cursor::new(bytes)
                    .chain(std::io::Cursor::new(r.carry))
                    .chain(r.reader);
                self.file_of.push_back(file);
                let tail = Tail {
                    file,
                    rest: Box::new(rest),
                };
                self.tails.insert(self.sent, tail);
                self.sent += 1;
            }
            Some((bytes, last)) => {
                self.file_of.push_back(file);
                workers.submit(self.sent, bytes, last, self.filter, self.agg.options());
                self.sent += 1;
                if last {
                    self.reading = None;
                }
            }
            None => self.reading = None,
        }
        Ok(true)
    }

    /// Merges the next block in input order: its groups, or its records one by one.
    fn merge(&mut self, file: usize, block: Block) -> anyhow::Result<()> {
        let source = &self.names[file];
        for (line, reason) in &block.malformed {
            self.log.report(source, self.line + line + 1, reason)?;
        }
        self.line += block.lines;
        for part in block.parts {
            self.agg.merge_group_part(part);
        }
        for p in &block.records {
            self.agg.add_parts(&p.parts(&block.text));
        }
        if let Some(t) = block.presence {
            self.agg.merge_presence(t);
        }
        Ok(())
    }

    /// Reads the rest of an input with the sequential reader, from the line merging reached.
    fn read_tail(&mut self, tail: Tail<'a>) -> anyhow::Result<()> {
        let buffered = std::io::BufReader::with_capacity(256 * 1024, tail.rest);
        let mut reader =
            RecordReader::new(buffered, self.names[tail.file].as_str()).with_position(Position {
                offset: 0,
                line: self.line,
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
    fn a_lone_brace_line_is_found_as_a_look_at_every_line_finds_it() {
        let every_line = |b: &[u8]| lines_of(b).any(|l| l.trim_ascii() == b"{");
        let cases: [&[u8]; 12] = [
            b"{\"a\":1}\n{\"b\":2}\n",
            b"{\n  \"metric\": \"m\"\n}\n",
            b"x\n  {  \n",
            b"x\n{",
            b"{",
            b"x\n{\r\n",
            b"{ \"a\": 1 }\n",
            b"{\t\"a\":1}\n{\t\n",
            b"\"{\"\n{x\n",
            b"",
            b"\n\n{\x0c\n",
            b"a{\nb\n",
        ];
        for c in cases {
            assert_eq!(
                has_lone_brace_line(c),
                every_line(c),
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
        // Every arrangement of a few telling bytes.
        let alphabet = [b'{', b'\n', b' ', b'x', b'\r'];
        for n in 1..=6u32 {
            for k in 0..5usize.pow(n) {
                let bytes: Vec<u8> = (0..n).map(|d| alphabet[(k / 5usize.pow(d)) % 5]).collect();
                assert_eq!(has_lone_brace_line(&bytes), every_line(&bytes), "{bytes:?}");
            }
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
