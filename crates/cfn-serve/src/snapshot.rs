//! Snapshots of the index (contract section 9, cfn-serve): a restart loads the newest valid
//! one and reads only what was appended since, instead of building from every record.
//!
//! A snapshot file is `MAGIC`, the format number, then frames (a little-endian `u32`
//! length and that many bytes of postcard), then `END` and the CRC-32 of every frame
//! byte. Big collections go a frame of a few hundred kilobytes at a time, so neither
//! writing nor loading holds a second copy of the index. A file is written beside its
//! final name, synced and renamed into place: a reader sees a whole file or none. One that
//! fails its checksum, comes from another version or another configuration, or is not the
//! service's own is named once, counted, and ignored.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use serde::de::DeserializeOwned;

const MAGIC: &[u8; 8] = b"CFNSNAP\0";
const END: &[u8; 8] = b"CFNSEND\0";
/// The layout of the frames; a snapshot of another is refused as "another version".
const FORMAT: u32 = 1;
/// Most bytes of one frame (a longer length is corruption).
const MAX_FRAME: usize = 64 << 20;
/// A sequence's frame is closed past this many bytes.
const FRAME_TARGET: usize = 256 << 10;
/// Most snapshot files kept: the newest, and the one before in case it is damaged.
pub const KEEP: usize = 2;
/// Most bytes of one snapshot: past it the write is given up (the index's own bounds keep
/// it far below: about its memory, 160 MB for a busy day).
pub const MAX_BYTES: u64 = 1 << 30;

/// Writes frames, counting the checksum and the size.
pub struct FrameWriter<W: Write> {
    out: W,
    crc: crc32fast::Hasher,
    buf: Vec<u8>,
    written: u64,
}

impl<W: Write> FrameWriter<W> {
    fn new(mut out: W) -> anyhow::Result<Self> {
        out.write_all(MAGIC)?;
        out.write_all(&FORMAT.to_le_bytes())?;
        Ok(Self {
            out,
            crc: crc32fast::Hasher::new(),
            buf: Vec::new(),
            written: 12,
        })
    }

    fn frame(&mut self) -> anyhow::Result<()> {
        // A frame a reader would refuse makes the write fail, not a useless file.
        anyhow::ensure!(
            self.buf.len() <= MAX_FRAME,
            "one item of {} MB, past the {} MB a frame holds",
            self.buf.len() >> 20,
            MAX_FRAME >> 20
        );
        let len = u32::try_from(self.buf.len()).context("a frame over 4 GB")?;
        self.written += 4 + u64::from(len);
        anyhow::ensure!(
            self.written <= MAX_BYTES,
            "the snapshot would pass {} MB",
            MAX_BYTES >> 20
        );
        let len = len.to_le_bytes();
        self.crc.update(&len);
        self.crc.update(&self.buf);
        self.out.write_all(&len)?;
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// One value, one frame.
    ///
    /// # Errors
    /// Write errors, or the snapshot past [`MAX_BYTES`].
    pub fn put<T: Serialize + ?Sized>(&mut self, v: &T) -> anyhow::Result<()> {
        self.buf.clear();
        self.buf = postcard::to_extend(v, std::mem::take(&mut self.buf))?;
        self.frame()
    }

    /// `len` items, as many frames as they take.
    ///
    /// # Errors
    /// As [`FrameWriter::put`].
    pub fn seq<T: Serialize>(
        &mut self,
        len: usize,
        items: impl IntoIterator<Item = T>,
    ) -> anyhow::Result<()> {
        self.put(&(len as u64))?;
        let mut n = 0;
        for item in items {
            self.buf = postcard::to_extend(&item, std::mem::take(&mut self.buf))?;
            n += 1;
            if self.buf.len() >= FRAME_TARGET {
                self.frame()?;
            }
        }
        anyhow::ensure!(n == len, "{n} items written of {len}");
        if !self.buf.is_empty() {
            self.frame()?;
        }
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<W> {
        self.out.write_all(END)?;
        self.out
            .write_all(&self.crc.clone().finalize().to_le_bytes())?;
        Ok(self.out)
    }
}

/// Reads frames, checking their lengths and counting the checksum.
pub struct FrameReader<R: Read> {
    inp: R,
    crc: crc32fast::Hasher,
    buf: Vec<u8>,
    at: usize,
}

impl<R: Read> FrameReader<R> {
    fn new(mut inp: R) -> anyhow::Result<Self> {
        let mut head = [0u8; 12];
        inp.read_exact(&mut head)
            .context("shorter than its header")?;
        anyhow::ensure!(&head[..8] == MAGIC, "not a cfn-serve snapshot");
        let format = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        if format != FORMAT {
            return Err(Refused::Version(format!("snapshot format {format}")).into());
        }
        Ok(Self {
            inp,
            crc: crc32fast::Hasher::new(),
            buf: Vec::new(),
            at: 0,
        })
    }

    fn frame(&mut self) -> anyhow::Result<()> {
        let mut len = [0u8; 4];
        self.inp.read_exact(&mut len).context("truncated")?;
        let n = u32::from_le_bytes(len) as usize;
        anyhow::ensure!(n <= MAX_FRAME, "a frame of {n} bytes");
        self.crc.update(&len);
        self.buf.resize(n, 0);
        self.inp.read_exact(&mut self.buf).context("truncated")?;
        self.crc.update(&self.buf);
        self.at = 0;
        Ok(())
    }

    /// The value of the next frame.
    ///
    /// # Errors
    /// A truncated or malformed frame.
    pub fn get<T: DeserializeOwned>(&mut self) -> anyhow::Result<T> {
        self.frame()?;
        let v = postcard::from_bytes(&self.buf)?;
        Ok(v)
    }

    /// A sequence [`FrameWriter::seq`] wrote, each item to `f`; at most `max` items.
    ///
    /// # Errors
    /// As [`FrameReader::get`], more than `max` items, or an error of `f`.
    pub fn seq<T: DeserializeOwned>(
        &mut self,
        max: usize,
        mut f: impl FnMut(T) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let len: u64 = self.get()?;
        anyhow::ensure!(len <= max as u64, "{len} items, at most {max} expected");
        self.buf.clear();
        self.at = 0;
        for _ in 0..len {
            if self.at >= self.buf.len() {
                self.frame()?;
            }
            let (item, rest) = postcard::take_from_bytes::<T>(&self.buf[self.at..])?;
            self.at = self.buf.len() - rest.len();
            f(item)?;
        }
        anyhow::ensure!(self.at == self.buf.len(), "bytes left after a sequence");
        Ok(())
    }

    /// A sequence as a vector.
    ///
    /// # Errors
    /// As [`FrameReader::seq`].
    pub fn vec<T: DeserializeOwned>(&mut self, max: usize) -> anyhow::Result<Vec<T>> {
        let mut out = Vec::new();
        self.seq(max, |item| {
            out.push(item);
            Ok(())
        })?;
        Ok(out)
    }

    fn finish(mut self) -> anyhow::Result<()> {
        let mut tail = [0u8; 12];
        self.inp.read_exact(&mut tail).context("truncated")?;
        anyhow::ensure!(&tail[..8] == END, "frames past the end");
        let want = u32::from_le_bytes(tail[8..12].try_into().expect("4 bytes"));
        let got = self.crc.clone().finalize();
        anyhow::ensure!(want == got, "checksum {got:08x}, the file says {want:08x}");
        let mut more = [0u8; 1];
        anyhow::ensure!(self.inp.read(&mut more)? == 0, "bytes after the checksum");
        Ok(())
    }
}

/// Why a snapshot was not used, as `cfn_serve_snapshots_refused_total{reason}` counts it.
#[derive(Debug)]
pub enum Refused {
    /// Another version of cfn-serve or of the file format wrote it.
    Version(String),
    /// Another configuration (span, indexed tags, histograms, directories) wrote it.
    Config,
    /// Not the service's own file, or others may write it.
    Untrusted(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Version(v) => write!(f, "written by another version ({v})"),
            Refused::Config => f.write_str("written with other index settings"),
            Refused::Untrusted(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Refused {}

/// The label a refusal is counted under.
pub fn reason(e: &anyhow::Error) -> &'static str {
    match e.downcast_ref::<Refused>() {
        Some(Refused::Version(_)) => "version",
        Some(Refused::Config) => "config",
        Some(Refused::Untrusted(_)) => "untrusted",
        None => "corrupt",
    }
}

/// What the first frame says: who wrote the snapshot, for what configuration, when.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Header {
    pub version: String,
    pub config: u64,
    pub written_ms: i64,
}

/// The snapshot files of `dir`, newest first (the name holds the time written).
pub fn list(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(i64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name();
            let ms = name
                .to_str()?
                .strip_prefix("cfn-serve-")?
                .strip_suffix(".snap")?
                .parse()
                .ok()?;
            Some((ms, e.path()))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().map(|(_, p)| p).collect()
}

/// Writes a snapshot into `dir` (made if missing, mode 0700) through `body`, atomically,
/// then removes all but the newest [`KEEP`]. Returns its path and size.
///
/// # Errors
/// I/O errors, or `body`'s; nothing is left behind but the snapshots there were.
pub fn write(
    dir: &Path,
    header: &Header,
    body: impl FnOnce(&mut FrameWriter<BufWriter<File>>) -> anyhow::Result<()>,
) -> anyhow::Result<(PathBuf, u64)> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot make {}", dir.display()))?;
    let path = dir.join(format!("cfn-serve-{}.snap", header.written_ms));
    let tmp = dir.join(format!(
        ".cfn-serve-{}.snap.{}.tmp",
        header.written_ms,
        std::process::id()
    ));
    let written = (|| {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            // A snapshot's name is never a symlink's.
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        let mut w = FrameWriter::new(BufWriter::with_capacity(1 << 20, file))?;
        w.put(header)?;
        body(&mut w)?;
        let size = w.written + 12;
        let file = w.finish()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        cfn_core::fsutil::sync_dir(dir);
        anyhow::Ok(size)
    })();
    let size = match written {
        Ok(size) => size,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.context(format!("cannot write {}", path.display())));
        }
    };
    for old in list(dir).into_iter().skip(KEEP) {
        let _ = std::fs::remove_file(old);
    }
    Ok((path, size))
}

/// Opens snapshot `path` for `load`: refused when it is a symlink, not a regular file, not
/// this user's, or writable by others; `config` is the fingerprint it must carry.
///
/// # Errors
/// [`Refused`] or what `load` or the checks found, with the path.
pub fn read<T>(
    path: &Path,
    config: u64,
    load: impl FnOnce(&mut FrameReader<BufReader<File>>) -> anyhow::Result<T>,
) -> anyhow::Result<(Header, T)> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let meta = file.metadata()?;
    let me = cfn_core::fsutil::effective_uid();
    if !meta.is_file() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return Err(Refused::Untrusted(format!(
            "not a file of this user that only it may write (uid {}, mode {:o})",
            meta.uid(),
            meta.mode() & 0o7777
        ))
        .into());
    }
    let mut r = FrameReader::new(BufReader::with_capacity(1 << 20, file))?;
    let header: Header = r.get()?;
    if header.version != env!("CARGO_PKG_VERSION") {
        return Err(Refused::Version(format!("cfn-serve {}", header.version)).into());
    }
    if header.config != config {
        return Err(Refused::Config.into());
    }
    let body = load(&mut r)?;
    r.finish()?;
    Ok((header, body))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes with `save` into frames in memory, reads back with `load`, hands the result
    /// to `check`.
    pub(crate) fn round_trip<T>(
        buf: &mut Vec<u8>,
        save: impl FnOnce(&mut FrameWriter<&mut Vec<u8>>) -> anyhow::Result<()>,
        load: impl FnOnce(&mut FrameReader<&[u8]>) -> anyhow::Result<T>,
        check: impl FnOnce(T),
    ) {
        let mut w = FrameWriter::new(&mut *buf).unwrap();
        save(&mut w).unwrap();
        w.finish().unwrap();
        let mut r = FrameReader::new(buf.as_slice()).unwrap();
        let v = load(&mut r).unwrap();
        r.finish().unwrap();
        check(v);
    }

    fn sample(dir: &Path, ms: i64) -> PathBuf {
        let header = Header {
            version: env!("CARGO_PKG_VERSION").into(),
            config: 7,
            written_ms: ms,
        };
        write(dir, &header, |w| {
            w.put("head")?;
            w.seq(100_000, (0..100_000u64).map(|i| (i, format!("name-{i}"))))
        })
        .unwrap()
        .0
    }

    fn load(path: &Path, config: u64) -> anyhow::Result<Vec<(u64, String)>> {
        read(path, config, |r| {
            let head: String = r.get()?;
            assert_eq!(head, "head");
            r.vec(1_000_000)
        })
        .map(|(_, v)| v)
    }

    #[test]
    fn a_snapshot_reads_back_as_written_across_many_frames() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path(), 1);
        let items = load(&path, 7).unwrap();
        assert_eq!(items.len(), 100_000);
        assert_eq!(items[99_999], (99_999, "name-99999".to_string()));
        assert!(std::fs::metadata(&path).unwrap().len() > 4 * FRAME_TARGET as u64);
    }

    #[test]
    fn damage_of_any_kind_is_refused_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path(), 1);
        let good = std::fs::read(&path).unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", good[..good.len() / 2].to_vec()),
            ("no checksum", good[..good.len() - 4].to_vec()),
            ("bit flipped", {
                let mut b = good.clone();
                let i = b.len() * 2 / 3;
                b[i] ^= 0x10;
                b
            }),
            ("format", {
                let mut b = good.clone();
                b[8] = 9;
                b
            }),
            ("trailing", [good.clone(), b"x".to_vec()].concat()),
        ];
        for (what, bytes) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let e = load(&path, 7).expect_err(what);
            let want = if what == "format" {
                "version"
            } else {
                "corrupt"
            };
            assert_eq!(reason(&e), want, "{what}: {e:#}");
        }
        std::fs::write(&path, &good).unwrap();
        assert_eq!(reason(&load(&path, 8).unwrap_err()), "config");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(reason(&load(&path, 7).unwrap_err()), "untrusted");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("cfn-serve-5.snap");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(load(&link, 7).is_err(), "a symlink is never followed");
    }

    #[test]
    fn an_item_past_a_frame_fails_the_write_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let header = Header {
            version: env!("CARGO_PKG_VERSION").into(),
            config: 7,
            written_ms: 1,
        };
        let big = "x".repeat(MAX_FRAME + 1);
        let e = write(dir.path(), &header, |w| w.put(&big)).unwrap_err();
        assert!(
            format!("{e:#}").contains("past the 64 MB a frame holds"),
            "{e:#}"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no file left"
        );
    }

    #[test]
    fn only_the_newest_two_are_kept_and_listed_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        for ms in [10, 30, 20] {
            sample(dir.path(), ms);
        }
        std::fs::write(dir.path().join("other.snap"), b"x").unwrap();
        let names: Vec<String> = list(dir.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["cfn-serve-30.snap", "cfn-serve-20.snap"]);
    }
}
