//! ST-14 under a restrictive umask. The umask is process-wide, so this runs in its own test
//! binary with a single test.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use carrel_archive::WhiteoutFormat;
use common::{Fixture, H, Num, Tar};

#[test]
fn st14_modes_do_not_depend_on_the_umask() {
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o027));
    let fx = Fixture::new();
    let tar = Tar::new()
        .file("deeply/nested/and/implied", "x")
        .dir("explicit/", 0o777)
        .file("explicit/child", "c")
        .entry(H::new("f666", b'0').mode(0o666).data("x"))
        .entry(H::new("fifo", b'6').mode(0o666))
        .entry(
            H::new("null", b'3')
                .mode(0o666)
                .dev(Num::Val(1), Num::Val(3)),
        )
        .finish();
    for fmt in [WhiteoutFormat::Naive, WhiteoutFormat::Overlay] {
        let dir = fx.root.join(format!("{fmt:?}"));
        fs::create_dir(&dir).unwrap();
        carrel_archive::apply_layer(&dir, &tar[..], &carrel_archive::ApplyOptions::new(fmt))
            .unwrap();
        for (p, mode) in [
            ("deeply", 0o755),
            ("deeply/nested", 0o755),
            ("deeply/nested/and", 0o755),
            ("explicit", 0o777),
            ("f666", 0o666),
            ("fifo", 0o666),
            ("null", 0o666),
        ] {
            let m = fs::symlink_metadata(dir.join(p)).unwrap();
            assert_eq!(m.mode() & 0o7777, mode, "{fmt:?} {p}");
        }
    }
    fx.assert_unchanged();
    rustix::process::umask(old);
}
