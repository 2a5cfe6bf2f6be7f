//! Opening inputs, archive day files in pairs: a day's plain file is opened, then its
//! `.gz` (held for its turn), so an archiver rotating the day while cfn-cat reads an archive
//! directory (the plain file appended to the `.gz` as its last member, then removed) never
//! makes a record appear twice or go missing (`cfn_core::cursor::open_day_pair`).

use cfn_core::exit::{Exit, fail};
use cfn_core::filter::RecordFilter;
use cfn_core::input::{Input, seek_offset_for_time, wrap_reader};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// A reader of one input.
pub type Reader = Box<dyn BufRead + Send>;

/// Opens the inputs of one run.
pub struct Opener<'f> {
    filter: &'f RecordFilter,
    seek: bool,
    /// The file inputs, to know whether a day's `.gz` has a turn of its own.
    listed: HashSet<PathBuf>,
    /// `.gz` files opened with their plain file, read at their turn from what was opened.
    held_gz: HashMap<PathBuf, File>,
}

impl<'f> Opener<'f> {
    pub fn new(inputs: &[Input], filter: &'f RecordFilter, seek: bool) -> Self {
        Self {
            filter,
            seek,
            listed: inputs
                .iter()
                .filter_map(|i| i.path().map(Path::to_path_buf))
                .collect(),
            held_gz: HashMap::new(),
        }
    }

    /// Opens `input`, skipping what `since` excludes in a plain file; `None` when it holds
    /// nothing to read (a day's plain file already in its `.gz`, read at the `.gz`'s turn).
    ///
    /// # Errors
    /// The input cannot be opened.
    pub fn open(&mut self, input: &Input) -> anyhow::Result<Option<Reader>> {
        let day = match input {
            Input::File {
                path,
                shared: false,
            } => path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(cfn_core::paths::parse_archive_name)
                .map(|(_, _, gz)| (path, gz)),
            _ => None,
        };
        match day {
            Some((path, true)) => match self.held_gz.remove(path) {
                Some(gz) => Ok(Some(wrap_reader(gz, true))),
                None => input.open().map(Some),
            },
            Some((path, false)) => self.open_plain_day(input, path),
            None => crate::open_at_since(input, self.filter, self.seek).map(Some),
        }
    }

    fn open_plain_day(&mut self, input: &Input, path: &Path) -> anyhow::Result<Option<Reader>> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        else {
            return crate::open_at_since(input, self.filter, self.seek).map(Some);
        };
        let pair = cfn_core::cursor::open_day_pair(dir, name, |p| match File::open(p) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .map_err(|e| {
            fail(
                cfn_core::exit::exit_for_io(&e),
                format!("cannot open {}: {e}", path.display()),
            )
        })?;
        let gz_path = dir.join(format!("{name}.gz"));
        let gz_has_turn = self.listed.contains(&gz_path);
        match (pair.plain, pair.gz) {
            (Some(plain), gz) => {
                if let Some(gz) = gz.filter(|_| gz_has_turn) {
                    self.held_gz.insert(gz_path, gz);
                }
                self.reader_of_plain(plain).map(Some)
            }
            // Rotated since it was listed: its records are the .gz's last member.
            (None, Some(_)) if gz_has_turn => Ok(None),
            (None, Some(gz)) => Ok(Some(wrap_reader(gz, true))),
            (None, None) => Err(fail(
                Exit::NoInput,
                format!("cannot open {}: no such file", path.display()),
            )),
        }
    }

    /// A reader of plain file `file` from where `since` starts.
    fn reader_of_plain(&self, mut file: File) -> anyhow::Result<Reader> {
        use std::io::{Seek, SeekFrom};
        if let (true, Some(since)) = (self.seek, self.filter.since) {
            let off = seek_offset_for_time(&mut file, since)?;
            file.seek(SeekFrom::Start(off))?;
        }
        Ok(wrap_reader(file, false))
    }
}
