//! A Benchling export zip on disk: checked whole before anything of it is uploaded, then read
//! file by file in chunks, so neither the archive nor any file in it is ever held in memory.
//!
//! The export is untrusted input (its file names come from whatever users attached in
//! Benchling). The check refuses, as a permanent failure (retrying cannot change the answer):
//! - more files than `max_files` (`EXPORT_MAX_FILES`), counted before the zip crate parses the
//!   central directory, which allocates per entry;
//! - a name that could escape the package prefix: `..` components, absolute paths, backslashes,
//!   drive letters, control characters; and two files with the same name;
//! - a file that inflates past `max_file_bytes` (`EXPORT_MAX_FILE_BYTES`), or files that
//!   together inflate past `max_total_bytes` (`EXPORT_MAX_UNZIPPED_BYTES`): a zip bomb. Sizes
//!   are the bytes actually decompressed, never the header's claim, and decompression stops
//!   one byte past the cap.
//!
//! Checking decompresses everything once and throws the bytes away; uploading decompresses
//! again. That costs CPU, not disk or memory, and it is why a refused export leaves nothing in
//! S3: nothing is uploaded until the whole archive has passed.
//!
//! Everything here is blocking (file I/O and inflation): call it from `spawn_blocking`.

use crate::job::JobError;
use std::collections::BTreeSet;
use std::io::{Read, Seek};
use std::path::Path;

const GIB: u64 = 1 << 30;

/// Caps on one export. Defaults suit a Fargate task with its 20 GiB ephemeral `/tmp`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportLimits {
    /// The downloaded zip (`EXPORT_MAX_BYTES`, default 5 GiB): it is written to `EXPORT_DIR`.
    pub max_download_bytes: u64,
    /// One file, uncompressed (`EXPORT_MAX_FILE_BYTES`, default 5 GiB).
    pub max_file_bytes: u64,
    /// All files together, uncompressed (`EXPORT_MAX_UNZIPPED_BYTES`, default 20 GiB).
    pub max_total_bytes: u64,
    /// Entries in the zip, directories included (`EXPORT_MAX_FILES`, default 10,000).
    pub max_files: usize,
}

impl Default for ExportLimits {
    fn default() -> Self {
        ExportLimits { max_download_bytes: 5 * GIB, max_file_bytes: 5 * GIB, max_total_bytes: 20 * GIB, max_files: 10_000 }
    }
}

/// A file of a checked export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportFile {
    /// Its index in the archive.
    pub index: usize,
    /// Its safe relative name (the S3 key under the package prefix).
    pub name: String,
    /// Its size, as decompressed.
    pub size: u64,
}

/// The key a zip entry name maps to under the package prefix, or why it is refused. `.` and
/// empty components are dropped (`./a//b` is `a/b`); anything that could point outside the
/// prefix, or that other tools would read as a path elsewhere, is refused.
pub fn safe_name(name: &str) -> Result<String, &'static str> {
    if name.chars().any(char::is_control) {
        return Err("control character");
    }
    if name.contains('\\') {
        return Err("backslash");
    }
    if name.starts_with('/') {
        return Err("absolute path");
    }
    // `C:` and also `C:name`, which Windows reads as a path relative to drive C's current
    // directory (found by fuzzing: `make fuzz`, target export_zip).
    if let [letter, b':', ..] = name.as_bytes() {
        if letter.is_ascii_alphabetic() {
            return Err("drive letter");
        }
    }
    let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") {
        return Err("parent directory");
    }
    if parts.is_empty() {
        return Err("empty name");
    }
    Ok(parts.join("/"))
}

fn unreadable(e: impl std::fmt::Display) -> JobError {
    JobError::Retry(format!("reading the downloaded export: {e}"))
}

fn zip_error(e: zip::result::ZipError) -> JobError {
    use zip::result::ZipError as Z;
    match e {
        // Retrying downloads the same archive: it will not become readable.
        Z::UnsupportedArchive(_) | Z::CompressionMethodNotSupported(_) | Z::InvalidPassword => {
            JobError::Permanent(format!("the export zip is not supported: {e}"))
        }
        _ => JobError::Retry(format!("the export is not a readable zip file: {e}")),
    }
}

/// How many central-directory headers (`PK\1\2`) the file could hold: every entry a zip reader
/// parses starts with that signature, at increasing offsets, so this bounds what parsing can
/// allocate whatever the end record claims. Stops counting past `stop_after`.
fn central_headers_at_most(file: &mut impl Read, stop_after: u64) -> std::io::Result<u64> {
    const SIG: [u8; 4] = *b"PK\x01\x02";
    let mut buf = vec![0u8; 1 << 20];
    let mut carry = 0; // bytes kept from the previous read: a signature may straddle reads
    let mut count = 0;
    loop {
        let n = file.read(&mut buf[carry..])?;
        if n == 0 {
            return Ok(count);
        }
        let filled = carry + n;
        count += buf[..filled].windows(4).filter(|w| *w == SIG).count() as u64;
        if count > stop_after {
            return Ok(count);
        }
        carry = filled.min(3);
        buf.copy_within(filled - carry..filled, 0);
    }
}

/// Copies up to `cap` bytes of `reader` to `each` in chunks of `chunk.len()`; returns the
/// bytes copied, or `None` as soon as the reader yields more than `cap`.
fn inflate_capped(
    reader: &mut impl Read,
    cap: u64,
    chunk: &mut [u8],
    mut each: impl FnMut(&[u8]) -> Result<(), JobError>,
) -> Result<Option<u64>, JobError> {
    let mut limited = reader.take(cap.saturating_add(1));
    let mut total = 0u64;
    loop {
        let n = limited.read(chunk).map_err(unreadable)?;
        if n == 0 {
            return Ok(Some(total));
        }
        total += n as u64;
        if total > cap {
            return Ok(None);
        }
        each(&chunk[..n])?;
    }
}

/// Opens the zip, having first bounded its entry count.
fn open(path: &Path, limits: &ExportLimits) -> Result<zip::ZipArchive<std::fs::File>, JobError> {
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let too_many = |n: String| {
        JobError::Permanent(format!(
            "the export zip has {n} entries, over EXPORT_MAX_FILES ({}); raise EXPORT_MAX_FILES if the export is genuine",
            limits.max_files
        ))
    };
    let max = limits.max_files as u64;
    if central_headers_at_most(&mut std::io::BufReader::new(&mut file), max).map_err(unreadable)? > max {
        return Err(too_many(format!("possibly more than {max} (central directory headers counted)")));
    }
    file.rewind().map_err(unreadable)?;
    let archive = zip::ZipArchive::new(file).map_err(zip_error)?;
    if archive.len() > limits.max_files {
        return Err(too_many(archive.len().to_string()));
    }
    Ok(archive)
}

/// Checks the whole export (see the module doc); returns its files, directories left out.
pub fn check(path: &Path, limits: &ExportLimits) -> Result<Vec<ExportFile>, JobError> {
    let mut archive = open(path, limits)?;
    let mut files = Vec::new();
    let mut names = BTreeSet::new();
    let mut total = 0u64;
    let mut chunk = vec![0u8; 64 << 10];
    for index in 0..archive.len() {
        let mut f = archive.by_index(index).map_err(zip_error)?;
        let raw = f.name().map_err(|e| JobError::Permanent(format!("the export zip has an unreadable file name: {e}")))?.to_string();
        let name = match (safe_name(&raw), f.is_dir()) {
            // Directories are not uploaded; a `./` entry names nothing outside either.
            (Ok(_), true) | (Err("empty name"), true) => continue,
            (Ok(name), false) => name,
            (Err(why), _) => return Err(JobError::Permanent(format!("the export zip has an unsafe file name `{raw}` ({why})"))),
        };
        if !names.insert(name.clone()) {
            return Err(JobError::Permanent(format!("the export zip has two files named `{name}`")));
        }
        let left = limits.max_total_bytes - total;
        let cap = limits.max_file_bytes.min(left);
        let Some(size) = inflate_capped(&mut f, cap, &mut chunk, |_| Ok(()))? else {
            return Err(JobError::Permanent(if limits.max_file_bytes <= left {
                format!(
                    "export file `{name}` inflates past EXPORT_MAX_FILE_BYTES ({} bytes): refused as a possible zip bomb \
                     (raise EXPORT_MAX_FILE_BYTES if the export is genuine)",
                    limits.max_file_bytes
                )
            } else {
                format!(
                    "the export inflates past EXPORT_MAX_UNZIPPED_BYTES ({} bytes) at `{name}`: refused as a possible zip bomb \
                     (raise EXPORT_MAX_UNZIPPED_BYTES if the export is genuine)",
                    limits.max_total_bytes
                )
            }));
        };
        total += size;
        files.push(ExportFile { index, name, size });
    }
    Ok(files)
}

/// One step of a streamed export.
#[derive(Debug, PartialEq)]
pub enum Piece {
    /// A file begins: its name and (checked) size.
    Start { name: String, size: u64 },
    /// The next bytes of the current file.
    Data(Vec<u8>),
    /// The current file is complete.
    End,
}

/// Sends the checked `files` of the export, in order, as `Start`, `Data` chunks of at most
/// `chunk` bytes, `End`. Each file must again inflate to exactly its checked size. Returns early
/// (`Ok`) when the receiver is gone: the uploader stopped and reports why.
pub fn stream(path: &Path, files: &[ExportFile], chunk: usize, tx: &tokio::sync::mpsc::Sender<Piece>) -> Result<(), JobError> {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(path).map_err(unreadable)?).map_err(zip_error)?;
    let mut buf = vec![0u8; chunk.max(1)];
    for file in files {
        let mut f = archive.by_index(file.index).map_err(zip_error)?;
        if tx.blocking_send(Piece::Start { name: file.name.clone(), size: file.size }).is_err() {
            return Ok(());
        }
        let mut gone = false;
        let size = inflate_capped(&mut f, file.size, &mut buf, |bytes| {
            gone = tx.blocking_send(Piece::Data(bytes.to_vec())).is_err();
            if gone {
                return Err(JobError::Retry("the upload stopped".into()));
            }
            Ok(())
        });
        if gone {
            return Ok(());
        }
        let size = size?;
        if size != Some(file.size) {
            return Err(JobError::Retry(format!("export file `{}` changed size between reads", file.name)));
        }
        if tx.blocking_send(Piece::End).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, body) in files {
            if name.ends_with('/') {
                w.add_directory(*name, options).unwrap();
            } else {
                w.start_file(*name, options).unwrap();
                w.write_all(body).unwrap();
            }
        }
        w.finish().unwrap().into_inner()
    }

    /// The zip written to a temporary file (removed on drop).
    struct OnDisk(std::path::PathBuf);
    impl OnDisk {
        fn new(bytes: &[u8]) -> OnDisk {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let path = std::env::temp_dir().join(format!("export-unit-{}-{n}.zip", std::process::id()));
            std::fs::write(&path, bytes).unwrap();
            OnDisk(path)
        }
    }
    impl Drop for OnDisk {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn refusal(r: Result<Vec<ExportFile>, JobError>) -> String {
        match r {
            Err(JobError::Permanent(m)) => m,
            other => panic!("expected a permanent refusal, got {other:?}"),
        }
    }

    #[test]
    fn names_that_could_escape_the_prefix_are_refused() {
        assert_eq!(safe_name("a.csv"), Ok("a.csv".into()));
        assert_eq!(safe_name("dir/./b.txt"), Ok("dir/b.txt".into()));
        assert_eq!(safe_name("./x//y/"), Ok("x/y".into()));
        assert_eq!(safe_name("12:30 results.csv"), Ok("12:30 results.csv".into()), "a colon is fine");
        assert_eq!(safe_name("../evil"), Err("parent directory"));
        assert_eq!(safe_name("a/../../evil"), Err("parent directory"));
        assert_eq!(safe_name("a/.."), Err("parent directory"));
        assert_eq!(safe_name("/etc/passwd"), Err("absolute path"));
        assert_eq!(safe_name("..\\evil"), Err("backslash"));
        assert_eq!(safe_name("a\\b"), Err("backslash"));
        assert_eq!(safe_name("C:/x"), Err("drive letter"));
        assert_eq!(safe_name("C:x"), Err("drive letter"), "relative to drive C's current directory");
        assert_eq!(safe_name("c:"), Err("drive letter"));
        assert_eq!(safe_name("s.tx:"), Ok("s.tx:".into()), "a colon later is fine");
        assert_eq!(safe_name("a\0b"), Err("control character"));
        assert_eq!(safe_name("a\nb"), Err("control character"));
        assert_eq!(safe_name(""), Err("empty name"));
        assert_eq!(safe_name("./"), Err("empty name"));
    }

    #[test]
    fn check_measures_files_by_inflating_them() {
        let zip = OnDisk::new(&zip_of(&[("dir/", b""), ("a.csv", b"1,2"), ("dir/b.txt", &[9u8; 5000])]));
        let files = check(&zip.0, &ExportLimits::default()).unwrap();
        assert_eq!(
            files,
            [ExportFile { index: 1, name: "a.csv".into(), size: 3 }, ExportFile { index: 2, name: "dir/b.txt".into(), size: 5000 }]
        );
    }

    /// From fuzzing (`make fuzz`, export_zip): the flagged zip has a file named `s.tx:` (a
    /// colon is fine in a key), and it led to `C:name`, which Windows reads as on drive C.
    #[test]
    fn fuzz_found_a_colon_name_fine_and_a_drive_relative_one_refused() {
        let flagged = OnDisk::new(include_bytes!("../tests/fixtures/fuzz-export-colon-name.zip"));
        let names: Vec<String> = check(&flagged.0, &ExportLimits::default()).unwrap().into_iter().map(|f| f.name).collect();
        assert_eq!(names, ["s.tx:"]);
        let zip = OnDisk::new(&zip_of(&[("ok.txt", b"x"), ("C:evil.txt", b"y")]));
        let m = refusal(check(&zip.0, &ExportLimits::default()));
        assert!(m.contains("`C:evil.txt` (drive letter)"), "{m}");
    }

    #[test]
    fn a_file_over_the_cap_is_a_bomb() {
        let zip = OnDisk::new(&zip_of(&[("ok", b"x"), ("bomb", &vec![0u8; 1 << 20])]));
        let limits = ExportLimits { max_file_bytes: 1000, ..Default::default() };
        let m = refusal(check(&zip.0, &limits));
        assert!(m.contains("`bomb`") && m.contains("EXPORT_MAX_FILE_BYTES (1000 bytes)"), "{m}");
        // Exactly at the cap passes: the cap is inclusive.
        let limits = ExportLimits { max_file_bytes: 1 << 20, ..Default::default() };
        assert_eq!(check(&zip.0, &limits).unwrap()[1].size, 1 << 20);
    }

    #[test]
    fn files_together_over_the_total_cap_are_refused() {
        let zip = OnDisk::new(&zip_of(&[("a", &[1u8; 600]), ("b", &[2u8; 600])]));
        let limits = ExportLimits { max_total_bytes: 1000, ..Default::default() };
        let m = refusal(check(&zip.0, &limits));
        assert!(m.contains("EXPORT_MAX_UNZIPPED_BYTES (1000 bytes) at `b`"), "{m}");
        assert_eq!(check(&zip.0, &ExportLimits { max_total_bytes: 1200, ..Default::default() }).unwrap().len(), 2);
    }

    #[test]
    fn too_many_entries_are_refused_before_parsing() {
        let names: Vec<String> = (0..12).map(|i| format!("f{i}")).collect();
        let zip = OnDisk::new(&zip_of(&names.iter().map(|n| (n.as_str(), &b"x"[..])).collect::<Vec<_>>()));
        let m = refusal(check(&zip.0, &ExportLimits { max_files: 11, ..Default::default() }));
        assert!(m.contains("EXPORT_MAX_FILES (11)"), "{m}");
        assert_eq!(check(&zip.0, &ExportLimits { max_files: 12, ..Default::default() }).unwrap().len(), 12);
    }

    #[test]
    fn central_headers_are_counted_across_read_boundaries() {
        // A reader that hands out one byte at a time splits every signature.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let data = [&b"xxPK\x01\x02yyPK\x01"[..], b"\x02PK\x01\x03"].concat();
        assert_eq!(central_headers_at_most(&mut Trickle(&data), 100).unwrap(), 2);
        assert_eq!(central_headers_at_most(&mut &data[..], 100).unwrap(), 2);
    }

    #[test]
    fn unsafe_and_duplicate_names_are_refused() {
        let m = refusal(check(&OnDisk::new(&zip_of(&[("ok", b"x"), ("../evil", b"x")])).0, &ExportLimits::default()));
        assert!(m.contains("unsafe file name `../evil` (parent directory)"), "{m}");
        let m = refusal(check(&OnDisk::new(&zip_of(&[("a", b"x"), ("./a", b"y")])).0, &ExportLimits::default()));
        assert!(m.contains("two files named `a`"), "{m}");
    }

    #[test]
    fn not_a_zip_is_retried() {
        assert!(matches!(check(&OnDisk::new(b"not a zip").0, &ExportLimits::default()), Err(JobError::Retry(_))));
    }

    #[test]
    fn stream_sends_each_file_in_chunks() {
        let zip = OnDisk::new(&zip_of(&[("a", b"hello world"), ("b", b"")]));
        let files = check(&zip.0, &ExportLimits::default()).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(100);
        stream(&zip.0, &files, 4, &tx).unwrap();
        drop(tx);
        let mut got = Vec::new();
        while let Ok(p) = rx.try_recv() {
            got.push(p);
        }
        use Piece::*;
        assert_eq!(
            got,
            [
                Start { name: "a".into(), size: 11 },
                Data(b"hell".to_vec()),
                Data(b"o wo".to_vec()),
                Data(b"rld".to_vec()),
                End,
                Start { name: "b".into(), size: 0 },
                End
            ]
        );
    }
}
