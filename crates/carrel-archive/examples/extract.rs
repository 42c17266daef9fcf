//! Extract a layer tar (plain, gzip or zstd) into a directory and report what it did, for quick
//! throughput measurements against `tar -x`:
//!
//! ```text
//! cargo run --release -p carrel-archive --example extract -- layer.tar /var/tmp/out [naive|overlay]
//! ```

use std::io::BufReader;
use std::time::Instant;

use carrel_archive::{ApplyOptions, WhiteoutFormat, apply_layer, decompress};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: extract <layer.tar[.gz|.zst]> <dir> [naive|overlay]".into());
    }
    let format = match args.get(3).map(String::as_str) {
        Some("naive") => WhiteoutFormat::Naive,
        _ => WhiteoutFormat::Overlay,
    };
    std::fs::create_dir_all(&args[2])?;
    let start = Instant::now();
    let file = std::fs::File::open(&args[1])?;
    let (compression, stream) =
        decompress(BufReader::with_capacity(carrel_archive::BUFFER_SIZE, file))?;
    let stats = apply_layer(args[2].as_ref(), stream, &ApplyOptions::new(format))?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{compression}: {} entries, {} bytes written, {} tar bytes in {secs:.3}s ({:.0} MB/s), diffID {}",
        stats.entries,
        stats.bytes_written,
        stats.tar_size,
        stats.tar_size as f64 / secs / 1e6,
        stats.diff_id
    );
    Ok(())
}
