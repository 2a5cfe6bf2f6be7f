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

/// One item of a reader's stream, in its input order.
enum Item {
    /// A selected record: its time and its bytes' range in the batch text.
    Record(i64, usize, usize),
    /// A malformed line, reported when the merge reaches it (so reports come in the order a
    /// single thread would give them).
    Malformed(u64, String),
}

#[derive(Default)]
struct Batch {
    text: Vec<u8>,
    items: Vec<Item>,
}

/// Items per batch sent from a reader thread.
const BATCH_ITEMS: usize = 4096;

/// `--sorted` with each input parsed on a thread of its own: the same output and the same
/// malformed-line reports, in the same order, as [`merge_sorted`].
///
/// # Errors
/// I/O errors, and malformed lines under `--strict`.
pub fn merge_sorted_parallel<R: BufRead + Send>(
    readers: Vec<RecordReader<R>>,
    filter: &RecordFilter,
    log: &mut MalformedLog,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut streams = Vec::with_capacity(readers.len());
        for mut reader in readers {
            let (tx, rx) = std::sync::mpsc::sync_channel::<anyhow::Result<Batch>>(4);
            let source = reader.source().to_string();
            scope.spawn(move || {
                // This thread reports nothing itself: malformed lines travel as items.
                let mut batch = Batch::default();
                loop {
                    let next = reader.next_item_with(|item| match item {
                        cfn_core::reader::Item::Record(rec) => {
                            if filter.matches(&rec) {
                                let start = batch.text.len();
                                batch.text.extend_from_slice(rec.raw);
                                batch
                                    .items
                                    .push(Item::Record(rec.ts_ms, start, batch.text.len()));
                            }
                        }
                        cfn_core::reader::Item::Malformed { line, reason, .. } => {
                            batch.items.push(Item::Malformed(line, reason));
                        }
                    });
                    let done = match next {
                        Ok(Some(())) => false,
                        Ok(None) => true,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    if (done || batch.items.len() >= BATCH_ITEMS)
                        && !batch.items.is_empty()
                        && tx.send(Ok(std::mem::take(&mut batch))).is_err()
                    {
                        return;
                    }
                    if done {
                        return;
                    }
                }
            });
            streams.push(Stream {
                rx,
                source,
                batch: Batch::default(),
                at: 0,
            });
        }
        let mut heap = BinaryHeap::new();
        for (i, s) in streams.iter_mut().enumerate() {
            if let Some(ts) = s.advance(log)? {
                heap.push(Reverse((ts, i)));
            }
        }
        while let Some(Reverse((_, i))) = heap.pop() {
            out.write_all(streams[i].head())?;
            out.write_all(b"\n")?;
            if let Some(ts) = streams[i].advance(log)? {
                heap.push(Reverse((ts, i)));
            }
        }
        Ok(())
    })
}

/// The merge's view of one reader thread.
struct Stream {
    rx: std::sync::mpsc::Receiver<anyhow::Result<Batch>>,
    source: String,
    batch: Batch,
    /// The item after the current head.
    at: usize,
}

impl Stream {
    /// The current record's bytes.
    fn head(&self) -> &[u8] {
        match &self.batch.items[self.at - 1] {
            Item::Record(_, start, end) => &self.batch.text[*start..*end],
            Item::Malformed(..) => unreachable!("the head is always a record"),
        }
    }

    /// Moves to the next record, reporting malformed lines on the way; its time, or None.
    fn advance(&mut self, log: &mut MalformedLog) -> anyhow::Result<Option<i64>> {
        loop {
            if self.at == self.batch.items.len() {
                match self.rx.recv() {
                    Ok(batch) => {
                        self.batch = batch?;
                        self.at = 0;
                    }
                    Err(_) => return Ok(None),
                }
                continue;
            }
            self.at += 1;
            match &self.batch.items[self.at - 1] {
                Item::Record(ts, ..) => return Ok(Some(*ts)),
                Item::Malformed(line, reason) => log.report(&self.source, *line, reason)?,
            }
        }
    }
}
