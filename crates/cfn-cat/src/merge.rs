//! `--sorted`: a k-way merge of inputs that are each in time order.

use cfn_core::filter::RecordFilter;
use cfn_core::reader::{MalformedLog, RecordReader};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufRead, Write};

/// An input opened only when the merge reaches the time its records start at (a cold day
/// file holds that UTC day only), so a merge of a year of day files holds one day's objects
/// open at a time, not all of them.
pub struct Later<'a, R> {
    pub starts_at: i64,
    /// A `host` tag to add to each of its records (`cfn-cat --host-tag`).
    pub host: Option<String>,
    pub open: Box<dyn FnOnce() -> anyhow::Result<RecordReader<R>> + 'a>,
}

/// Writes the selected records of `readers` and `later` (sorted by `starts_at`) in timestamp
/// order (ties keep input order). Each of `later` is opened when the merge's next record is
/// at or after its start, or when nothing else is left; every input is dropped when read to
/// the end.
///
/// # Errors
/// I/O errors (opening included), and malformed lines under `--strict`.
pub fn merge_sorted<'a, R: BufRead>(
    readers: Vec<RecordReader<R>>,
    later: Vec<Later<'a, R>>,
    filter: &RecordFilter,
    log: &mut MalformedLog,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    // Each reader's current record, owned, since readers advance independently. A slot is
    // emptied (None) once its reader is read to the end, and reused by the next opened.
    let mut slots: Vec<Option<Slot<R>>> = Vec::new();
    let mut heap = BinaryHeap::new();
    let mut later = later.into_iter().peekable();
    // Ties keep input order: the sequence number of each opened input.
    let mut opened = 0usize;
    let mut start = |reader: RecordReader<R>,
                     host: Option<String>,
                     slots: &mut Vec<Option<Slot<R>>>,
                     heap: &mut BinaryHeap<Reverse<(i64, usize, usize)>>,
                     log: &mut MalformedLog|
     -> anyhow::Result<()> {
        let i = slots.iter().position(Option::is_none).unwrap_or_else(|| {
            slots.push(None);
            slots.len() - 1
        });
        let mut slot = Slot {
            reader,
            head: Vec::new(),
            host,
        };
        if let Some(ts) = slot.advance(filter, log)? {
            slots[i] = Some(slot);
            heap.push(Reverse((ts, opened, i)));
        }
        opened += 1;
        Ok(())
    };
    for r in readers {
        start(r, None, &mut slots, &mut heap, log)?;
    }
    loop {
        let next_ts = heap.peek().map(|Reverse((ts, ..))| *ts);
        if let Some(l) = later.peek()
            && next_ts.is_none_or(|ts| l.starts_at <= ts)
        {
            let l = later.next().expect("peeked");
            start((l.open)()?, l.host, &mut slots, &mut heap, log)?;
            continue;
        }
        let Some(Reverse((_, seq, i))) = heap.pop() else {
            return Ok(());
        };
        let slot = slots[i].as_mut().expect("a slot in the heap is open");
        out.write_all(&slot.head)?;
        out.write_all(b"\n")?;
        match slot.advance(filter, log)? {
            Some(ts) => heap.push(Reverse((ts, seq, i))),
            None => slots[i] = None,
        }
    }
}

/// One open input of the merge: its reader, its current record (owned, since readers
/// advance independently) and the host tag its records get.
struct Slot<R> {
    reader: RecordReader<R>,
    head: Vec<u8>,
    host: Option<String>,
}

impl<R: BufRead> Slot<R> {
    /// Moves to the next selected record, copying it into `head`; its time, or None.
    fn advance(
        &mut self,
        filter: &RecordFilter,
        log: &mut MalformedLog,
    ) -> anyhow::Result<Option<i64>> {
        let (head, host) = (&mut self.head, self.host.as_deref());
        loop {
            let got = self.reader.next_with(log, |rec| {
                if !filter.matches(&rec) {
                    return None;
                }
                head.clear();
                match host {
                    Some(h) => cfn_core::record::write_with_tag(&rec, "host", h, head),
                    None => head.extend_from_slice(rec.raw),
                }
                Some(rec.ts_ms)
            })?;
            match got {
                None => return Ok(None),
                Some(Some(ts)) => return Ok(Some(ts)),
                Some(None) => {}
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A reader that counts itself open while it lives.
    struct Counted {
        text: std::io::Cursor<Vec<u8>>,
        open: Rc<Cell<usize>>,
    }

    impl std::io::Read for Counted {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            std::io::Read::read(&mut self.text, buf)
        }
    }

    impl BufRead for Counted {
        fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
            self.text.fill_buf()
        }
        fn consume(&mut self, n: usize) {
            self.text.consume(n)
        }
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.open.set(self.open.get() - 1);
        }
    }

    #[test]
    fn day_files_are_opened_a_day_at_a_time_and_merged_in_order() {
        const DAY: i64 = 86_400_000;
        let open = Rc::new(Cell::new(0));
        let most = Rc::new(Cell::new(0));
        // 100 days of 16 shards' day files, each with two records of its day.
        let mut later = Vec::new();
        for day in 0..100i64 {
            for shard in 0..16 {
                let (open, most) = (open.clone(), most.clone());
                let text: String = (0..2)
                    .map(|i| {
                        let t = cfn_core::time::format_ms(day * DAY + shard * 1000 + i * 60_000);
                        format!("{{\"timestamp\":\"{t}\",\"metric\":\"m\",\"value\":{shard}}}\n")
                    })
                    .collect();
                later.push(Later {
                    starts_at: day * DAY,
                    host: None,
                    open: Box::new(move || {
                        open.set(open.get() + 1);
                        most.set(most.get().max(open.get()));
                        Ok(RecordReader::new(
                            Counted {
                                text: std::io::Cursor::new(text.into_bytes()),
                                open,
                            },
                            "day",
                        ))
                    }),
                });
            }
        }
        let mut out = Vec::new();
        let mut log = MalformedLog::quiet();
        merge_sorted(
            Vec::new(),
            later,
            &RecordFilter::default(),
            &mut log,
            &mut out,
        )
        .unwrap();
        let times: Vec<i64> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| cfn_core::reader::parse_record(l.as_bytes()).unwrap().ts_ms)
            .collect();
        assert_eq!(times.len(), 3200);
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order");
        assert_eq!(
            most.get(),
            16,
            "one day's objects open at a time, not 1,600"
        );
        assert_eq!(open.get(), 0, "every object dropped once read");
    }
}
