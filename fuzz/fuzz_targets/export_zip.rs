//! A Benchling export zip (entry names, sizes, nesting, truncation): never a panic. What the
//! check accepts has only names that stay under the package prefix (no write or upload can
//! land outside it), within the byte and file caps; streaming it yields exactly the checked
//! files and sizes, never more bytes than a cap.
#![no_main]
use libfuzzer_sys::fuzz_target;
use service::export::{check, stream, ExportLimits, Piece};
use std::path::{Component, Path};

const LIMITS: ExportLimits =
    ExportLimits { max_download_bytes: 1 << 20, max_file_bytes: 64 << 10, max_total_bytes: 256 << 10, max_files: 64 };

/// A key that cannot leave the prefix, judged apart from the code under test.
fn stays_under_prefix(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('\\')
        && !name.chars().any(char::is_control)
        && !name.starts_with('/')
        // Windows reads `C:` and `C:name` as on drive C (a colon elsewhere is a plain character).
        && !matches!(name.as_bytes(), [l, b':', ..] if l.is_ascii_alphabetic())
        && Path::new(name).components().all(|c| matches!(c, Component::Normal(_)))
}

fuzz_target!(|zip: &[u8]| {
    let path = std::env::temp_dir().join(format!("fuzz-export-{}.zip", std::process::id()));
    std::fs::write(&path, zip).unwrap();
    let Ok(files) = check(&path, &LIMITS) else { return };
    assert!(files.len() <= LIMITS.max_files);
    let mut total = 0;
    for f in &files {
        assert!(stays_under_prefix(&f.name), "accepted the name {:?}", f.name);
        assert!(f.size <= LIMITS.max_file_bytes, "{} is {} bytes", f.name, f.size);
        total += f.size;
    }
    assert!(total <= LIMITS.max_total_bytes, "{total} bytes in all");
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let reader = std::thread::spawn(move || {
        let mut got: Vec<(String, u64)> = Vec::new();
        while let Some(piece) = rx.blocking_recv() {
            match piece {
                Piece::Start { name, .. } => got.push((name, 0)),
                Piece::Data(bytes) => got.last_mut().expect("data before a start").1 += bytes.len() as u64,
                Piece::End => {}
            }
        }
        got
    });
    let streamed = stream(&path, &files, 4096, &tx);
    drop(tx);
    let got = reader.join().unwrap();
    streamed.expect("a checked export failed to stream");
    let want: Vec<(String, u64)> = files.iter().map(|f| (f.name.clone(), f.size)).collect();
    assert_eq!(got, want, "streamed other files or sizes than were checked");
});
