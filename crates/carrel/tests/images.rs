//! Integration tests for images: the layer store, both storage drivers, load/save/import and
//! what users see (tables, inspect JSON, errors), run through the real `carrel` binary as root.
//!
//! Every test has its own data root ([`common::TestRoot`]) that is cleaned up (processes,
//! mounts, files) also when the test fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

// ---- small helpers ------------------------------------------------------------------------

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

fn short(id: &str) -> &str {
    &id.trim_start_matches("sha256:")[..12]
}

fn str_vec(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// Go's tabwriter as the docker CLI configures it (`minwidth 10, padding 3`): every cell but the
/// last of a line is padded to its column's width.
fn docker_table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut width = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate().take(r.len().saturating_sub(1)) {
            width[i] = width[i].max((c.chars().count() + 3).max(10));
        }
    }
    let mut out = String::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i + 1 < r.len() {
                out.push_str(&format!("{c:<w$}", w = width[i]));
            } else {
                out.push_str(c);
            }
        }
        out.push('\n');
    }
    out
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

fn created_secs(inspect: &serde_json::Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(inspect["Created"].as_str().unwrap())
        .unwrap()
        .timestamp()
}

/// What must not change when a command fails.
#[derive(Debug, PartialEq, Eq)]
struct State {
    images: Vec<String>,
    driver_dirs: Vec<String>,
    short_links: Vec<String>,
    blobs: Vec<String>,
}

fn state(root: &TestRoot) -> State {
    State {
        images: root.image_ids(),
        driver_dirs: root.driver_dirs(),
        short_links: list_dir(&root.path("overlay2/l")),
        blobs: root.blob_files(),
    }
}

/// After a failed command: the same images, layers, links and blobs as before, nothing in
/// `content/ingest`, and `system check` is clean.
fn assert_unchanged(root: &TestRoot, before: &State) {
    assert_eq!(
        root.ingest_files(),
        Vec::<String>::new(),
        "content/ingest must be empty"
    );
    assert_eq!(&state(root), before, "a failed command changed the root");
    root.assert_check_clean();
}

/// Run a command that must fail with exit status 1 and one error line containing every piece
/// of `expect`, and leave the root as it was. Returns the error line.
fn fails_cleanly(root: &TestRoot, args: &[&str], expect: &[&str]) -> String {
    let before = state(root);
    let out = root.run(args);
    assert_eq!(out.code(), Some(1), "exit status 1 expected: {out:?}");
    let line = one_line_error(&out.stderr).to_string();
    eprintln!("carrel {}: {line}", args.join(" "));
    for e in expect {
        assert!(line.contains(e), "error should mention {e:?}: {line}");
    }
    assert_unchanged(root, &before);
    line
}

/// A layer of `n` files of `size` random bytes under `dir`, with its expected files.
fn random_layer(
    rng: &mut Rng,
    dir: &str,
    n: usize,
    size: usize,
) -> (Vec<u8>, BTreeMap<PathBuf, String>) {
    let contents: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| (format!("{dir}/f{i:04}"), rng.bytes(size + i)))
        .collect();
    let files: Vec<(&str, u32, &[u8])> = contents
        .iter()
        .map(|(p, d)| (p.as_str(), 0o644, d.as_slice()))
        .collect();
    let expected = contents
        .iter()
        .map(|(p, d)| (PathBuf::from(p), sha256_hex(d)))
        .collect();
    (layer_with_files(&files), expected)
}

/// A three-layer image exercising what layers can hold: owners, special modes, symlinks,
/// hardlinks, empty files, a whiteout of a file and of a directory, and an opaque directory.
fn feature_image(tag: &str) -> Image {
    let mut rng = Rng::new(7);
    let big = rng.bytes(300_000);
    let mut l1 = TarBuilder::new();
    l1.dir("etc", 0o755)
        .file("etc/hello", 0o644, b"hello\n")
        .file("etc/secret", 0o600, b"secret\n")
        .dir_owned("home", 0o755, 0, 0)
        .dir_owned("home/user", 0o750, 1000, 1000)
        .file_owned("home/user/notes", 0o640, 1000, 1000, b"notes\n")
        .dir("bin", 0o755)
        .file("bin/tool", 0o4755, &big)
        .hardlink("bin/tool-link", "bin/tool")
        .symlink("bin/sh", "tool")
        .dir("tmp", 0o1777)
        .file("empty", 0o644, b"")
        .dir("gone", 0o755)
        .file("gone/a", 0o644, b"a")
        .dir("opaque", 0o755)
        .file("opaque/old", 0o644, b"old");
    let mut l2 = TarBuilder::new();
    l2.dir("etc", 0o755)
        .file("etc/hello", 0o644, b"hello again\n")
        .whiteout("etc/secret")
        .whiteout("gone")
        .dir("opaque", 0o700)
        .opaque("opaque")
        .file("opaque/new", 0o644, b"new");
    let mut l3 = TarBuilder::new();
    l3.dir("var", 0o755)
        .dir("var/lib", 0o755)
        .file("var/lib/state", 0o644, b"state")
        .symlink("var/run", "../run");
    Image::new(
        vec![l1.into_bytes(), l2.into_bytes(), l3.into_bytes()],
        &[tag],
    )
}

/// The tree every layer directory of `image` holds, bottom first.
fn layer_trees(root: &TestRoot, image: &str) -> Vec<Tree> {
    root.layer_dirs_of(image).iter().map(|d| tree(d)).collect()
}

// ---- 1. lifecycle ---------------------------------------------------------------------------

fn lifecycle(driver: &str) {
    let root = TestRoot::with_driver(&format!("lifecycle-{driver}"), driver);
    let id = busybox(&root);

    // `images`: Docker's columns and values.
    let v = root.inspect("busybox");
    let size = docker_size(v["Size"].as_u64().unwrap(), 3);
    let since = docker_since(created_secs(&v));
    let table = root.ok(&["images"]);
    let expected = docker_table(&[
        row(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]),
        row(&["busybox", "latest", short(&id), &since, &size]),
    ]);
    assert_eq!(table, expected);
    if since.len() == 12 {
        // With a CREATED value as wide as "6 months ago" the header is exactly Docker's.
        assert_eq!(
            table.lines().next().unwrap(),
            "REPOSITORY   TAG       IMAGE ID       CREATED        SIZE"
        );
    }
    assert_eq!(root.ok(&["images", "-q"]), format!("{}\n", short(&id)));
    assert_eq!(root.ok(&["images", "-q", "--no-trunc"]), format!("{id}\n"));
    assert_eq!(
        root.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]),
        "busybox:latest\n"
    );
    let json = root.ok(&["images", "--format", "json"]);
    assert_eq!(json.lines().count(), 1, "one JSON object per line: {json}");
    let j: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(j["Repository"], "busybox");
    assert_eq!(j["Tag"], "latest");
    assert_eq!(j["ID"], short(&id));
    assert_eq!(j["Size"], size.as_str());
    assert_eq!(j["CreatedSince"], since.as_str());

    // `image inspect`.
    assert_eq!(v["Id"], id.as_str());
    assert_eq!(str_vec(&v["RepoTags"]), ["busybox:latest"]);
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["Architecture"], host_arch());
    assert_eq!(str_vec(&v["Config"]["Cmd"]), ["sh"]);
    assert_eq!(v["RootFS"]["Type"], "layers");
    let layers = str_vec(&v["RootFS"]["Layers"]);
    assert_eq!(layers.len(), 1);
    assert!(layers[0].starts_with("sha256:") && layers[0].len() == 71);
    assert_eq!(v["GraphDriver"]["Name"], driver);
    let upper = PathBuf::from(v["GraphDriver"]["Data"]["UpperDir"].as_str().unwrap());
    assert!(
        upper.starts_with(root.root()),
        "UpperDir inside the root: {}",
        upper.display()
    );
    assert_eq!(
        file_sha256(&upper.join("bin/busybox")),
        file_sha256(Path::new("/bin/busybox")),
        "the layer holds the host's busybox"
    );
    let ls = std::fs::symlink_metadata(upper.join("bin/ls")).unwrap();
    assert_eq!(
        ls.ino(),
        std::fs::metadata(upper.join("bin/busybox")).unwrap().ino(),
        "applets are hard links"
    );
    assert_eq!(
        root.ok(&["inspect", "--format", "{{.Id}}", "busybox"]),
        format!("{id}\n")
    );
    assert_eq!(
        root.ok(&["image", "inspect", "--format", "{{.GraphDriver.Name}}", &id]),
        format!("{driver}\n")
    );

    // `history`.
    let hist = root.ok(&["history", "busybox"]);
    assert_eq!(
        hist,
        docker_table(&[
            row(&["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]),
            row(&[short(&id), &since, "", &size, "busybox from /bin/busybox"]),
        ])
    );
    assert_eq!(
        root.ok(&["history", "-q", "busybox"]),
        format!("{}\n", short(&id))
    );

    // `tag`: both names are listed, on the same image.
    assert_eq!(root.ok(&["tag", "busybox", "mybox:v1"]), "");
    assert_eq!(
        root.ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"])
            .lines()
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([
            format!("busybox:latest {}", short(&id)).as_str(),
            format!("mybox:v1 {}", short(&id)).as_str()
        ])
    );
    assert_eq!(
        str_vec(&root.inspect("mybox:v1")["RepoTags"]),
        ["busybox:latest", "mybox:v1"]
    );

    // `rmi` of one of two tags only untags.
    assert_eq!(root.ok(&["rmi", "mybox:v1"]), "Untagged: mybox:v1\n");
    assert_eq!(root.image_ids(), std::slice::from_ref(&id));
    assert!(upper.join("bin/busybox").is_file());
    root.assert_check_clean();

    // `rmi` of the last tag deletes the image and its layer.
    let chain = &layers[0]; // one layer: its chain id is its diff id
    assert_eq!(
        root.ok(&["rmi", "busybox"]),
        format!("Untagged: busybox:latest\nDeleted: {id}\nDeleted: {chain}\n")
    );
    assert_eq!(root.image_ids(), Vec::<String>::new());
    assert!(
        !upper.parent().unwrap().exists(),
        "the layer directory {} is gone",
        upper.parent().unwrap().display()
    );
    assert_eq!(root.driver_dirs(), Vec::<String>::new());
    assert_eq!(list_dir(&root.path("overlay2/l")), Vec::<String>::new());
    assert_eq!(
        root.blob_files(),
        Vec::<String>::new(),
        "blobs are collected"
    );
    assert_eq!(
        root.ok(&["images"]),
        docker_table(&[row(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"])])
    );
    root.assert_check_clean();
}

#[test]
fn lifecycle_overlay2() {
    lifecycle("overlay2");
}

#[test]
fn lifecycle_copy_driver() {
    lifecycle("copy");
}

fn shared_layers(driver: &str) {
    let root = TestRoot::with_driver(&format!("shared-{driver}"), driver);
    let mut rng = Rng::new(11);
    let (base, base_files) = random_layer(&mut rng, "base", 20, 10_000);
    let (top_a, a_files) = random_layer(&mut rng, "a", 3, 1000);
    let (top_b, b_files) = random_layer(&mut rng, "b", 3, 1000);
    let a = Image::new(vec![base.clone(), top_a], &["app:a"]);
    let b = Image::new(vec![base, top_b], &["app:b"]);
    let file =
        archive(&[a.clone(), b.clone()], Layout::DockerLegacy).write(&root.scratch("ab.tar"));
    assert_eq!(
        root.ok(&["load", "-i", s(&file)]),
        "Loaded image: app:a\nLoaded image: app:b\n"
    );
    assert_eq!(
        root.driver_dirs().len(),
        3,
        "base, a and b: the base is stored once"
    );
    let mut want_a = base_files.clone();
    want_a.extend(a_files);
    let mut want_b = base_files.clone();
    want_b.extend(b_files);
    assert_eq!(files_of(&root.rootfs_tree("app:a")), want_a);
    assert_eq!(files_of(&root.rootfs_tree("app:b")), want_b);
    let base_dir = if driver == "overlay2" {
        let da = root.layer_dirs_of("app:a");
        let db = root.layer_dirs_of("app:b");
        assert_eq!(
            da[0], db[0],
            "both images use the same base layer directory"
        );
        Some(da[0].clone())
    } else {
        None
    };

    // Remove one image: only its own top layer goes.
    let chains_a = a.chain_ids();
    assert_eq!(
        root.ok(&["rmi", "app:a"]),
        format!(
            "Untagged: app:a\nDeleted: {}\nDeleted: {}\n",
            a.id(),
            chains_a[1]
        )
    );
    assert_eq!(root.driver_dirs().len(), 2);
    if let Some(d) = base_dir {
        assert_eq!(files_of(&tree(&d)), base_files, "the shared layer stays");
    }
    assert_eq!(files_of(&root.rootfs_tree("app:b")), want_b);
    root.assert_check_clean();

    // The other image still saves and loads.
    let saved = root.scratch("b.tar");
    root.ok(&["save", "-o", s(&saved), "app:b"]);
    let other = TestRoot::with_driver(&format!("shared-{driver}-2"), driver);
    assert_eq!(
        other.ok(&["load", "-i", s(&saved)]),
        "Loaded image: app:b\n"
    );
    assert_eq!(other.image_ids(), [b.id()]);
    assert_eq!(files_of(&other.rootfs_tree("app:b")), want_b);
    other.assert_check_clean();
}

#[test]
fn shared_layers_stay_while_another_image_uses_them() {
    shared_layers("overlay2");
}

#[test]
fn shared_layers_stay_while_another_image_uses_them_copy_driver() {
    shared_layers("copy");
}

#[test]
fn rmi_by_id_of_image_in_two_repositories_must_be_forced() {
    let root = TestRoot::new("rmi-conflict");
    let id = busybox(&root);
    let layer = str_vec(&root.inspect("busybox")["RootFS"]["Layers"])[0].clone();
    root.ok(&["tag", "busybox", "other/bb:v1"]);
    let before = state(&root);
    let out = root.run(&["rmi", short(&id)]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(
        one_line_error(&out.stderr),
        format!(
            "Error: conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
            short(&id)
        )
    );
    assert_eq!(out.stdout, "");
    assert_eq!(state(&root), before);
    assert_eq!(root.image_ids(), std::slice::from_ref(&id));

    assert_eq!(
        root.ok(&["rmi", "-f", short(&id)]),
        format!(
            "Untagged: busybox:latest\nUntagged: other/bb:v1\nDeleted: {id}\nDeleted: {layer}\n"
        )
    );
    assert_eq!(root.image_ids(), Vec::<String>::new());
    assert_eq!(root.driver_dirs(), Vec::<String>::new());
    root.assert_check_clean();

    // Tags in one repository: removal by id needs no force.
    let id = busybox(&root);
    root.ok(&["tag", "busybox", "busybox:two"]);
    assert_eq!(
        root.ok(&["rmi", &id]),
        format!(
            "Untagged: busybox:latest\nUntagged: busybox:two\nDeleted: {id}\nDeleted: {layer}\n"
        )
    );
    root.assert_check_clean();
}

#[test]
fn image_prune_removes_dangling_images_and_with_all_every_unused_one() {
    let root = TestRoot::new("prune");
    let id = busybox(&root);
    let bb_size = root.inspect("busybox")["Size"].as_u64().unwrap();
    let rootfs = layer_with_files(&[("data/file", 0o644, &Rng::new(3).bytes(50_000))]);
    let rootfs_path = root.scratch("rootfs.tar");
    std::fs::write(&rootfs_path, &rootfs).unwrap();
    let dangling = root.ok(&["import", s(&rootfs_path)]).trim().to_string();
    assert!(dangling.starts_with("sha256:"), "{dangling}");
    assert_eq!(
        root.ok(&["images", "-f", "dangling=true", "-q", "--no-trunc"]),
        format!("{dangling}\n")
    );
    assert_eq!(
        root.ok(&["images", "-f", "dangling=false", "-q", "--no-trunc"]),
        format!("{id}\n")
    );
    assert!(
        root.ok(&["images"])
            .contains(&format!("<none>       <none>    {}", short(&dangling))),
        "a dangling image shows as <none> <none>"
    );
    let d = root.inspect(&dangling);
    let d_size = d["Size"].as_u64().unwrap();
    let d_layer = str_vec(&d["RootFS"]["Layers"])[0].clone();
    assert_eq!(d_layer, format!("sha256:{}", sha256_hex(&rootfs)));

    // Without -f it asks, and "n" keeps everything.
    let out = root.run_stdin(&["image", "prune"], b"n\n");
    assert!(out.success(), "{out:?}");
    assert_eq!(
        out.stdout,
        "WARNING! This will remove all dangling images.\nAre you sure you want to continue? [y/N] "
    );
    assert_eq!(root.image_ids().len(), 2);

    // Dangling only.
    assert_eq!(
        root.ok(&["image", "prune", "-f"]),
        format!(
            "Deleted Images:\ndeleted: {dangling}\ndeleted: {d_layer}\n\nTotal reclaimed space: {}\n",
            docker_size(d_size, 4)
        )
    );
    assert_eq!(root.image_ids(), std::slice::from_ref(&id));
    assert_eq!(
        root.ok(&["image", "prune", "-f"]),
        "Total reclaimed space: 0B\n"
    );

    // All unused.
    let bb_layer = str_vec(&root.inspect("busybox")["RootFS"]["Layers"])[0].clone();
    assert_eq!(
        root.ok(&["image", "prune", "-a", "-f"]),
        format!(
            "Deleted Images:\nuntagged: busybox:latest\ndeleted: {id}\ndeleted: {bb_layer}\n\nTotal reclaimed space: {}\n",
            docker_size(bb_size, 4)
        )
    );
    assert_eq!(root.image_ids(), Vec::<String>::new());
    assert_eq!(root.driver_dirs(), Vec::<String>::new());
    assert_eq!(root.blob_files(), Vec::<String>::new());
    root.assert_check_clean();
}

// ---- 2. round trips and interop -----------------------------------------------------------

fn round_trip(driver: &str) {
    let src = TestRoot::with_driver(&format!("rt-src-{driver}"), driver);
    let bb = busybox(&src);
    let img = feature_image("rt/app:v1");
    let file =
        archive(std::slice::from_ref(&img), Layout::DockerBlobs).write(&src.scratch("in.tar"));
    assert_eq!(
        src.ok(&["load", "-i", s(&file)]),
        "Loaded image: rt/app:v1\n"
    );
    assert_eq!(src.inspect("rt/app:v1")["Id"], img.id().as_str());

    // What a container would see of the feature image.
    let rootfs = src.rootfs_tree("rt/app:v1");
    assert!(
        !rootfs.contains_key(Path::new("etc/secret")),
        "whiteout applied"
    );
    assert!(
        !rootfs.contains_key(Path::new("gone")),
        "directory whiteout applied"
    );
    assert!(
        !rootfs.contains_key(Path::new("opaque/old")),
        "opaque directory applied"
    );
    let hello = &rootfs[Path::new("etc/hello")];
    assert_eq!(
        hello.sha256.as_deref(),
        Some(sha256_hex(b"hello again\n").as_str())
    );
    assert_eq!(rootfs[Path::new("bin/tool")].mode, 0o4755);
    assert_eq!(rootfs[Path::new("tmp")].mode, 0o1777);
    let notes = &rootfs[Path::new("home/user/notes")];
    assert_eq!((notes.uid, notes.gid, notes.mode), (1000, 1000, 0o640));
    assert_eq!(
        rootfs[Path::new("bin/sh")].target.as_deref(),
        Some(Path::new("tool"))
    );
    assert_eq!(
        rootfs[Path::new("var/run")].target.as_deref(),
        Some(Path::new("../run"))
    );

    let saved = src.scratch("saved.tar");
    src.ok(&["save", "-o", s(&saved), "busybox", "rt/app:v1"]);
    let check_copy = |dst: &TestRoot| {
        assert_eq!(
            dst.image_ids().into_iter().collect::<BTreeSet<_>>(),
            BTreeSet::from([bb.clone(), img.id()])
        );
        for name in ["busybox:latest", "rt/app:v1"] {
            let (a, b) = (src.inspect(name), dst.inspect(name));
            assert_eq!(a["Id"], b["Id"], "{name}: same id");
            assert_eq!(a["RepoTags"], b["RepoTags"], "{name}: same tags");
            assert_eq!(a["RootFS"], b["RootFS"], "{name}: same layers");
            assert_eq!(a["Size"], b["Size"], "{name}: same size");
            let (ta, tb) = (layer_trees(&src, name), layer_trees(dst, name));
            assert_eq!(ta.len(), tb.len());
            for (i, (x, y)) in ta.iter().zip(&tb).enumerate() {
                assert_trees_eq(x, y, &format!("{name} layer {i} after save/load"));
            }
        }
        dst.assert_check_clean();
    };

    // Through a file.
    let dst = TestRoot::with_driver(&format!("rt-dst-{driver}"), driver);
    let out = dst.ok(&["load", "-i", s(&saved)]);
    assert_eq!(
        out.lines().collect::<BTreeSet<_>>(),
        BTreeSet::from(["Loaded image: busybox:latest", "Loaded image: rt/app:v1"])
    );
    check_copy(&dst);

    // `save` to stdout piped into `load` from stdin.
    let piped = TestRoot::with_driver(&format!("rt-pipe-{driver}"), driver);
    let mut save = src.spawn(
        &["save", "busybox", "rt/app:v1"],
        Stdio::null(),
        Stdio::piped(),
        Stdio::piped(),
    );
    let pipe = save.stdout.take().unwrap();
    let load = piped.spawn(&["load"], Stdio::from(pipe), Stdio::piped(), Stdio::piped());
    let load_out = piped.wait(load, "carrel load (from carrel save)");
    let save_out = src.wait(save, "carrel save (to a pipe)");
    assert!(save_out.success(), "{save_out:?}");
    assert!(load_out.success(), "{load_out:?}");
    check_copy(&piped);
    src.assert_check_clean();
}

/// A plain-tar layer is kept as its extracted directory and a small tar-split, and `save`
/// gives back its exact bytes; a layer that cannot be rebuilt from its directory (a path
/// written twice) is stored whole and round trips as well. Both drivers.
fn tar_split_round_trip(driver: &str) {
    let root = TestRoot::with_driver(&format!("split-{driver}"), driver);
    let data = Rng::new(31).bytes(3 << 20);
    let plain = layer_with_files(&[("big/blob", 0o644, &data), ("big/small", 0o600, b"s")]);
    let mut twice = TarBuilder::new();
    twice
        .file("etc/conf", 0o644, b"first version")
        .file("etc/conf", 0o644, b"second")
        .hardlink("etc/conf2", "etc/conf");
    let twice = twice.into_bytes();
    let img = Image::new(vec![plain.clone(), twice.clone()], &["split:v1"]);
    let f =
        archive(std::slice::from_ref(&img), Layout::DockerLegacy).write(&root.scratch("in.tar"));
    assert_eq!(root.ok(&["load", "-i", s(&f)]), "Loaded image: split:v1\n");

    // Only the second layer's tar is in the content store, next to the config and a split.
    let ids = img.diff_ids();
    let blobs = root.blob_files();
    assert!(!blobs.contains(&ids[0].hex().to_string()), "{blobs:?}");
    assert!(blobs.contains(&ids[1].hex().to_string()), "{blobs:?}");
    for b in &blobs {
        let size = std::fs::metadata(root.path(&format!("content/blobs/sha256/{b}")))
            .unwrap()
            .len();
        assert!(
            size < 1 << 20,
            "blob {b} is {size} bytes: no copy of the 3 MB layer"
        );
    }

    // `save` gives back both layers byte for byte.
    let saved = root.scratch("saved.tar");
    root.ok(&["save", "-o", s(&saved), "split:v1"]);
    let out = root.scratch("saved");
    std::fs::create_dir(&out).unwrap();
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(&saved)
        .arg("-C")
        .arg(&out)
        .status()
        .unwrap();
    assert!(untar.success());
    for (layer, id) in [(&plain, &ids[0]), (&twice, &ids[1])] {
        let got = std::fs::read(out.join(format!("blobs/sha256/{}", id.hex()))).unwrap();
        assert!(got == *layer, "layer {id} saved with other bytes");
    }
    root.assert_check_clean();

    // Removing the image removes the splits with the layers.
    root.ok(&["rmi", "split:v1"]);
    assert_eq!(root.blob_files(), Vec::<String>::new());
}

#[test]
fn plain_layers_are_kept_as_tar_splits_and_saved_byte_for_byte() {
    tar_split_round_trip("overlay2");
}

#[test]
fn plain_layers_are_kept_as_tar_splits_and_saved_byte_for_byte_copy_driver() {
    tar_split_round_trip("copy");
}

#[test]
fn save_load_round_trip_overlay2() {
    round_trip("overlay2");
}

#[test]
fn save_load_round_trip_copy_driver() {
    round_trip("copy");
}

#[test]
fn compressed_archives_load() {
    let src = TestRoot::new("compressed-src");
    let id = busybox(&src);
    let plain = src.scratch("bb.tar");
    src.ok(&["save", "-o", s(&plain), "busybox"]);
    let want = src.rootfs_tree("busybox");
    let gz = compress_file(&plain, Compression::Gzip);
    let zst = compress_file(&plain, Compression::Zstd);
    for (name, file, stdin) in [
        ("gzip-file", &gz, false),
        ("zstd-file", &zst, false),
        ("gzip-stdin", &gz, true),
        ("zstd-stdin", &zst, true),
    ] {
        let dst = TestRoot::new(&format!("compressed-{name}"));
        let out = if stdin {
            dst.run_stdin_file(&["load"], file)
        } else {
            dst.run(&["load", "-i", s(file)])
        };
        assert!(out.success(), "{name}: {out:?}");
        assert_eq!(out.stdout, "Loaded image: busybox:latest\n", "{name}");
        assert_eq!(dst.image_ids(), std::slice::from_ref(&id), "{name}");
        assert_trees_eq(&want, &dst.rootfs_tree("busybox"), name);
        assert_eq!(
            dst.ingest_files(),
            Vec::<String>::new(),
            "{name}: spool removed"
        );
        dst.assert_check_clean();
    }

    // OCI archives with gzip and zstd compressed layers.
    let img = feature_image("oci/app:v1");
    let reference = TestRoot::new("compressed-ref");
    let plain = archive(std::slice::from_ref(&img), Layout::Oci(Compression::None))
        .write(&reference.scratch("plain.tar"));
    reference.ok(&["load", "-i", s(&plain)]);
    let want = reference.rootfs_tree("oci/app:v1");
    for c in [Compression::Gzip, Compression::Zstd] {
        let dst = TestRoot::new(&format!("compressed-oci-{c:?}"));
        let file =
            archive(std::slice::from_ref(&img), Layout::Oci(c)).write(&dst.scratch("oci.tar"));
        assert_eq!(
            dst.ok(&["load", "-i", s(&file)]),
            "Loaded image: oci/app:v1\n"
        );
        assert_eq!(dst.image_ids(), [img.id()]);
        assert_eq!(
            str_vec(&dst.inspect("oci/app:v1")["RootFS"]["Layers"]),
            img.diff_ids()
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
        );
        assert_trees_eq(
            &want,
            &dst.rootfs_tree("oci/app:v1"),
            &format!("{c:?} layers"),
        );
        dst.assert_check_clean();
    }
}

fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("running {program} (is it installed?): {e}");
        });
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn skopeo_and_umoci_read_carrel_archives() {
    let root = TestRoot::new("skopeo-reads");
    let img = feature_image("interop/app:v1");
    let file =
        archive(std::slice::from_ref(&img), Layout::DockerLegacy).write(&root.scratch("in.tar"));
    root.ok(&["load", "-i", s(&file)]);
    let layers = str_vec(&root.inspect("interop/app:v1")["RootFS"]["Layers"]);
    let saved = root.scratch("saved.tar");
    root.ok(&["save", "-o", s(&saved), "interop/app:v1"]);

    for transport in ["docker-archive", "oci-archive"] {
        let out = tool(
            "skopeo",
            &["inspect", &format!("{transport}:{}", s(&saved))],
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            str_vec(&v["Layers"]),
            layers,
            "{transport}: same layer digests"
        );
        assert_eq!(v["Os"], "linux", "{transport}");
        assert_eq!(v["Architecture"], host_arch(), "{transport}");
        let cfg = tool(
            "skopeo",
            &[
                "inspect",
                "--config",
                "--raw",
                &format!("{transport}:{}", s(&saved)),
            ],
        );
        assert_eq!(
            format!("sha256:{}", sha256_hex(cfg.as_bytes())),
            img.id(),
            "{transport}: the config is carried byte for byte"
        );
    }

    // skopeo converts carrel's archive to an OCI layout; umoci unpacks the same tree.
    let layout = root.scratch("layout");
    tool(
        "skopeo",
        &[
            "copy",
            "-q",
            &format!("docker-archive:{}", s(&saved)),
            &format!("oci:{}:app", s(&layout)),
        ],
    );
    let bundle = root.scratch("bundle");
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:app", s(&layout)),
            s(&bundle),
        ],
    );
    assert_trees_eq(
        &tree(&bundle.join("rootfs")),
        &root.rootfs_tree("interop/app:v1"),
        "umoci unpack of carrel's archive vs carrel's layers",
    );
}

/// An OCI layout made by umoci: a first layer with varied content, then a second one deleting
/// a file and a directory. Returns the layout and the tree `umoci unpack` gives.
fn umoci_image(root: &TestRoot) -> (PathBuf, Tree) {
    let layout = root.scratch("umoci-layout");
    let img = format!("{}:latest", s(&layout));
    tool("umoci", &["init", "--layout", s(&layout)]);
    tool("umoci", &["new", "--image", &img]);
    let b1 = root.scratch("umoci-b1");
    tool("umoci", &["unpack", "--image", &img, s(&b1)]);
    let r = b1.join("rootfs");
    let mut rng = Rng::new(5);
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::write(r.join("etc/hello"), "hello\n").unwrap();
    std::fs::write(r.join("etc/keep"), "keep\n").unwrap();
    std::os::unix::fs::symlink("hello", r.join("etc/link")).unwrap();
    std::fs::create_dir_all(r.join("usr/bin")).unwrap();
    std::fs::write(r.join("usr/bin/big"), rng.bytes(1 << 20)).unwrap();
    std::fs::set_permissions(
        r.join("usr/bin/big"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::hard_link(r.join("usr/bin/big"), r.join("usr/bin/big-link")).unwrap();
    std::fs::create_dir_all(r.join("data/sub/deep")).unwrap();
    std::fs::write(r.join("data/sub/deep/x"), "x").unwrap();
    std::fs::write(r.join("data/empty"), "").unwrap();
    std::os::unix::fs::chown(r.join("data"), Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(r.join("data"), std::fs::Permissions::from_mode(0o750)).unwrap();
    tool("umoci", &["repack", "--image", &img, s(&b1)]);

    let b2 = root.scratch("umoci-b2");
    tool("umoci", &["unpack", "--image", &img, s(&b2)]);
    let r = b2.join("rootfs");
    std::fs::remove_file(r.join("etc/hello")).unwrap();
    std::fs::remove_dir_all(r.join("data/sub")).unwrap();
    std::fs::write(r.join("etc/new"), "new\n").unwrap();
    tool("umoci", &["repack", "--image", &img, s(&b2)]);

    let b3 = root.scratch("umoci-b3");
    tool("umoci", &["unpack", "--image", &img, s(&b3)]);
    let want = tree(&b3.join("rootfs"));
    assert!(want.contains_key(Path::new("etc/new")) && !want.contains_key(Path::new("etc/hello")));
    (layout, want)
}

#[test]
fn umoci_image_converted_by_skopeo_loads_with_the_tree_umoci_unpacks() {
    let work = TestRoot::new("umoci-src");
    let (layout, want) = umoci_image(&work);
    let src = format!("oci:{}:latest", s(&layout));
    let docker = work.scratch("X.tar");
    let oci = work.scratch("Y.tar");
    tool(
        "skopeo",
        &[
            "copy",
            "-q",
            &src,
            &format!("docker-archive:{}:img:v1", s(&docker)),
        ],
    );
    tool(
        "skopeo",
        &[
            "copy",
            "-q",
            &src,
            &format!("oci-archive:{}:img:v1", s(&oci)),
        ],
    );

    let mut ids = BTreeSet::new();
    for (name, file, driver) in [
        ("docker-archive", &docker, "overlay2"),
        ("oci-archive", &oci, "overlay2"),
        ("docker-archive-copy", &docker, "copy"),
    ] {
        let root = TestRoot::with_driver(&format!("umoci-{name}"), driver);
        assert_eq!(
            root.ok(&["load", "-i", s(file)]),
            "Loaded image: img:v1\n",
            "{name}"
        );
        let v = root.inspect("img:v1");
        assert_eq!(
            str_vec(&v["RootFS"]["Layers"]).len(),
            2,
            "{name}: two layers"
        );
        ids.insert(v["Id"].as_str().unwrap().to_string());
        assert_trees_eq(&want, &root.rootfs_tree("img:v1"), name);
        root.assert_check_clean();
    }
    assert_eq!(
        ids.len(),
        1,
        "both archives give the same image id: {ids:?}"
    );
}

#[test]
fn umoci_whiteout_is_an_overlay_whiteout_in_the_upper_layer() {
    let root = TestRoot::new("umoci-whiteout");
    let (layout, _) = umoci_image(&root);
    let file = root.scratch("X.tar");
    tool(
        "skopeo",
        &[
            "copy",
            "-q",
            &format!("oci:{}:latest", s(&layout)),
            &format!("docker-archive:{}:wh:v1", s(&file)),
        ],
    );
    root.ok(&["load", "-i", s(&file)]);
    let trees = layer_trees(&root, "wh:v1");
    assert_eq!(trees.len(), 2);
    let (lower, upper) = (&trees[0], &trees[1]);
    assert_eq!(
        lower[Path::new("etc/hello")].sha256.as_deref(),
        Some(sha256_hex(b"hello\n").as_str()),
        "the lower layer keeps the file"
    );
    let wh = &upper[Path::new("etc/hello")];
    assert!(
        wh.is_whiteout(),
        "etc/hello in the upper layer is a 0/0 char device: {wh}"
    );
    let sub = &upper[Path::new("data/sub")];
    assert!(
        sub.is_whiteout(),
        "data/sub in the upper layer is a 0/0 char device: {sub}"
    );
    assert!(
        !upper.keys().any(|p| p.to_string_lossy().contains(".wh.")),
        "no .wh. files are left in the layer"
    );
    assert_eq!(upper[Path::new("etc/new")].size, 4);
}

#[test]
fn system_check_reports_damage_and_repair_fixes_it() {
    let root = TestRoot::new("check-repair");
    let id = busybox(&root);
    let want = root.rootfs_tree("busybox");
    root.assert_check_clean();
    // Debris of the kinds a crash or a bug could leave.
    let orphan = root.path(&format!("overlay2/{}", "0".repeat(64)));
    std::fs::create_dir_all(orphan.join("diff/etc")).unwrap();
    std::fs::write(orphan.join("diff/etc/x"), "x").unwrap();
    let ingest = root.path("content/ingest/0123456789abcdef-leftover");
    std::fs::write(&ingest, "partial").unwrap();
    let stray = root.path(&format!("content/blobs/sha256/{}", sha256_hex(b"stray")));
    std::fs::write(&stray, "stray").unwrap();

    let out = root.run(&["system", "check"]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(
        out.stderr, "",
        "the report is on stdout, with no extra error line"
    );
    for want in [
        "Interrupted writes:",
        s(&ingest),
        "Orphan layer directories:",
        s(&orphan),
        "Blob files without a record:",
        s(&stray),
        "Problems found; run `carrel system check --repair` to fix them.",
    ] {
        assert!(out.stdout.contains(want), "{want:?} missing: {out:?}");
    }
    let out = root.run(&["system", "check", "--repair"]);
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("Repaired:"), "{out:?}");
    root.assert_check_clean();
    assert!(!orphan.exists() && !ingest.exists() && !stray.exists());
    assert_eq!(root.image_ids(), [id]);
    assert_trees_eq(&want, &root.rootfs_tree("busybox"), "busybox after repair");
}

// ---- 3. storage drivers and 4. the data root ------------------------------------------------

#[test]
fn info_shows_driver_root_and_backing_filesystem() {
    for driver in ["overlay2", "copy"] {
        let root = TestRoot::with_driver(&format!("info-{driver}"), driver);
        busybox(&root);
        let info = root.ok(&["info"]);
        let lines: Vec<&str> = info.lines().collect();
        assert!(
            lines.contains(&format!("Storage Driver: {driver}").as_str()),
            "{info}"
        );
        assert!(lines.contains(&"Images: 1"), "{info}");
        assert!(
            lines.contains(&format!("Carrel Root Dir: {}", s(root.root())).as_str()),
            "{info}"
        );
        let backing = lines
            .iter()
            .find_map(|l| l.strip_prefix(" Backing Filesystem: "))
            .unwrap_or_else(|| panic!("no Backing Filesystem line: {info}"));
        assert!(!backing.trim().is_empty(), "{info}");
        // Later commands keep the driver without being told.
        let out = Command::new(CARREL)
            .args(["--root", s(root.root()), "info", "--format", "{{.Driver}}"])
            .env_remove("CARREL_STORAGE_DRIVER")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{driver}\n"));
    }
}

#[test]
fn reopening_a_root_with_another_driver_fails_clearly() {
    let root = TestRoot::new("driver-switch");
    let id = busybox(&root);
    assert_eq!(root.inspect("busybox")["GraphDriver"]["Name"], "overlay2");
    let before = state(&root);
    let out = root.run(&["--storage-driver", "copy", "images"]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    let line = one_line_error(&out.stderr);
    for want in [s(root.root()), "overlay2", "copy"] {
        assert!(line.contains(want), "error should mention {want:?}: {line}");
    }
    assert_eq!(out.stdout, "");
    assert_unchanged(&root, &before);
    assert_eq!(root.image_ids(), [id]);
    assert!(root.ok(&["info"]).contains("Storage Driver: overlay2\n"));

    // An empty root may switch.
    let empty = TestRoot::new("driver-switch-empty");
    empty.ok(&["images"]);
    assert!(
        empty
            .ok(&["--storage-driver", "copy", "info"])
            .contains("Storage Driver: copy\n")
    );
    assert_eq!(
        empty
            .fail(&["--storage-driver", "zfs", "images"])
            .lines()
            .count(),
        1,
        "unknown drivers are refused"
    );
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn data_root_modes() {
    let root = TestRoot::new("modes");
    busybox(&root);
    assert_eq!(mode_of(root.root()), 0o710, "data root");
    assert_eq!(mode_of(&root.path("content")), 0o700, "content");
    assert_eq!(mode_of(&root.path("carrel.db")), 0o600, "carrel.db");
    for extra in ["carrel.db-wal", "carrel.db-shm"] {
        if root.path(extra).exists() {
            assert_eq!(mode_of(&root.path(extra)), 0o600, "{extra}");
        }
    }
    let blobs = root.blob_files();
    assert_eq!(blobs.len(), 2, "config and layer: {blobs:?}");
    for b in blobs {
        let p = root.path(&format!("content/blobs/sha256/{b}"));
        assert_eq!(mode_of(&p), 0o444, "blob {b} is read-only");
        assert_eq!(file_sha256(&p), b, "blob {b} holds what its name says");
    }
}

/// On ext2/3/4, the directories that hold one directory per layer, container or volume carry
/// the `T` attribute (top of directory hierarchies), so that the block allocator starts each
/// layer elsewhere than where the last removed one was (see `mark_top_directory`).
#[test]
fn layer_container_and_volume_homes_are_tops_of_directory_hierarchies() {
    let root = TestRoot::new("topdirs");
    busybox(&root);
    let fs_type = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(root.root())
        .output()
        .expect("stat -f");
    let fs_type = String::from_utf8_lossy(&fs_type.stdout).trim().to_string();
    for dir in ["overlay2", "containers", "volumes", "content"] {
        let out = Command::new("lsattr")
            .arg("-d")
            .arg(root.path(dir))
            .output()
            .expect("lsattr");
        let text = String::from_utf8_lossy(&out.stdout);
        let attrs = text.split_whitespace().next().unwrap_or("");
        let spread = dir != "content" && fs_type == "ext2/ext3";
        assert_eq!(
            attrs.contains('T'),
            spread,
            "{dir} on {fs_type}: attributes {attrs:?} ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

#[test]
fn carrel_root_environment_variable_works_like_the_flag() {
    let t = TestRoot::new("env-root");
    let env_cmd = |args: &[&str]| {
        let mut c = Command::new(CARREL);
        c.env("CARREL_ROOT", t.root())
            .env_remove("CARREL_STORAGE_DRIVER")
            .args(args);
        t.run_cmd(c, Input::None)
    };
    let out = env_cmd(&["image", "import-busybox"]);
    assert!(out.success(), "{out:?}");
    let id = out.stdout.trim().to_string();
    assert!(
        t.root().join("carrel.db").is_file(),
        "the root named by CARREL_ROOT is used"
    );
    assert_eq!(
        t.image_ids(),
        std::slice::from_ref(&id),
        "--root sees what CARREL_ROOT made"
    );
    let out = env_cmd(&["images", "-q", "--no-trunc"]);
    assert_eq!(out.stdout, format!("{id}\n"));
    // The flag wins over the variable.
    let other = t.scratch("other-root");
    let mut c = Command::new(CARREL);
    c.env("CARREL_ROOT", &other)
        .args(["--root", s(t.root()), "images", "-q", "--no-trunc"]);
    assert_eq!(t.run_cmd(c, Input::None).stdout, format!("{id}\n"));
    assert!(!other.exists());
}

// ---- 5. bad input ---------------------------------------------------------------------------

/// A root with busybox, so that "unchanged" is meaningful.
fn root_with_busybox(name: &str) -> TestRoot {
    let root = TestRoot::new(name);
    busybox(&root);
    root
}

/// A one-image docker archive whose single layer is `size` random bytes in one file.
fn big_image(tag: &str, size: usize, seed: u64) -> Image {
    let data = Rng::new(seed).bytes(size);
    Image::new(
        vec![layer_with_files(&[("big/blob", 0o644, &data)])],
        &[tag],
    )
}

#[test]
fn load_of_a_missing_file_fails_cleanly() {
    let root = root_with_busybox("bad-missing");
    let missing = root.scratch("nonexistent.tar");
    fails_cleanly(
        &root,
        &["load", "-i", s(&missing)],
        &[s(&missing), "No such file or directory"],
    );
}

#[test]
fn load_of_random_bytes_fails_cleanly() {
    let root = root_with_busybox("bad-random");
    let f = root.scratch("random.tar");
    std::fs::write(&f, Rng::new(99).bytes(1 << 20)).unwrap();
    fails_cleanly(&root, &["load", "-i", s(&f)], &[s(&f), "tar"]);
    let line = one_line_error(&root.run_stdin_file(&["load"], &f).stderr).to_string();
    assert!(line.contains("tar"), "{line}");
    assert_unchanged(&root, &state(&root));
}

#[test]
fn load_of_an_empty_file_or_empty_stdin_fails_cleanly() {
    let root = root_with_busybox("bad-empty");
    let f = root.scratch("empty.tar");
    std::fs::write(&f, b"").unwrap();
    fails_cleanly(&root, &["load", "-i", s(&f)], &[s(&f), "empty"]);
    let before = state(&root);
    let out = root.run_stdin(&["load"], b"");
    assert_eq!(out.code(), Some(1), "{out:?}");
    let line = one_line_error(&out.stderr);
    assert!(line.contains("empty"), "{line}");
    assert_unchanged(&root, &before);
}

#[test]
fn load_of_a_truncated_archive_fails_cleanly() {
    let root = root_with_busybox("bad-truncated");
    let img = big_image("trunc:v1", 3 << 20, 1);
    let full = archive(std::slice::from_ref(&img), Layout::DockerLegacy).to_tar();
    // Cut in the middle of the layer (the biggest member).
    let cut = root.scratch("cut.tar");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    fails_cleanly(&root, &["load", "-i", s(&cut)], &[s(&cut), "truncated"]);
    // The same through stdin, and gzip-compressed.
    let before = state(&root);
    let line = one_line_error(&root.run_stdin_file(&["load"], &cut).stderr).to_string();
    assert!(line.contains("truncated"), "{line}");
    assert_unchanged(&root, &before);
    let gz = compress_file(&cut, Compression::Gzip);
    let line = fails_cleanly(&root, &["load", "-i", s(&gz)], &[]);
    assert!(
        line.contains("truncated") || line.contains("corrupt"),
        "{line}"
    );
    // A gzip stream cut short.
    let gz_full = compress(&full, Compression::Gzip);
    let gz_cut = root.scratch("cut-stream.tar.gz");
    std::fs::write(&gz_cut, &gz_full[..gz_full.len() / 2]).unwrap();
    let line = fails_cleanly(&root, &["load", "-i", s(&gz_cut)], &[]);
    assert!(
        line.contains("truncated") || line.contains("corrupt"),
        "{line}"
    );
}

#[test]
fn load_of_a_tar_without_manifest_or_index_fails_cleanly() {
    let root = root_with_busybox("bad-unknown-format");
    let f = root.scratch("plain.tar");
    std::fs::write(
        &f,
        layer_with_files(&[("etc/hello", 0o644, b"hi"), ("bin/x", 0o755, b"x")]),
    )
    .unwrap();
    fails_cleanly(
        &root,
        &["load", "-i", s(&f)],
        &[s(&f), "manifest.json", "index.json"],
    );
}

#[test]
fn load_of_an_altered_layer_fails_with_a_digest_mismatch() {
    let root = root_with_busybox("bad-digest");
    let img = big_image("altered:v1", 100_000, 2);
    let mut a = archive(std::slice::from_ref(&img), Layout::DockerBlobs);
    let expected = img.diff_ids()[0].clone();
    let layer = a.get_mut(&format!("blobs/sha256/{}", expected.hex()));
    layer[5000] ^= 0xff; // inside the file's content: still a valid tar
    let found = format!("sha256:{}", sha256_hex(layer));
    let f = a.write(&root.scratch("altered.tar"));
    fails_cleanly(
        &root,
        &["load", "-i", s(&f)],
        &["digest mismatch", &expected.to_string(), &found],
    );

    // In a legacy archive the layer is only checked against the config's diff id.
    let mut a = archive(std::slice::from_ref(&img), Layout::DockerLegacy);
    let chain = img.chain_ids()[0].clone();
    let layer = a.get_mut(&format!("{}/layer.tar", chain.hex()));
    layer[5000] ^= 0xff;
    let found = format!("sha256:{}", sha256_hex(layer));
    let f = a.write(&root.scratch("altered-legacy.tar"));
    fails_cleanly(
        &root,
        &["load", "-i", s(&f)],
        &["diff id mismatch", &expected.to_string(), &found],
    );

    // An OCI archive with an altered compressed layer.
    let mut a = archive(std::slice::from_ref(&img), Layout::Oci(Compression::Gzip));
    let layer_name = a
        .names()
        .into_iter()
        .find(|n| {
            n.starts_with("blobs/") && a.entries.iter().any(|(m, d)| m == n && d.len() > 50_000)
        })
        .unwrap();
    let expected = format!("sha256:{}", layer_name.trim_start_matches("blobs/sha256/"));
    let layer = a.get_mut(&layer_name);
    let last = layer.len() - 1;
    layer[last] ^= 0xff; // gzip trailer (size): the content is still readable
    let found = format!("sha256:{}", sha256_hex(layer));
    let f = a.write(&root.scratch("altered-oci.tar"));
    fails_cleanly(
        &root,
        &["load", "-i", s(&f)],
        &["digest mismatch", &expected, &found],
    );
}

#[test]
fn load_of_a_manifest_pointing_at_a_missing_blob_fails_cleanly() {
    let root = root_with_busybox("bad-missing-blob");
    let mut rng = Rng::new(4);
    let (l1, _) = random_layer(&mut rng, "one", 5, 1000);
    let (l2, _) = random_layer(&mut rng, "two", 5, 1000);
    let img = Image::new(vec![l1, l2], &["missing:v1"]);
    // The second layer is missing: the first must not stay behind.
    let mut a = archive(std::slice::from_ref(&img), Layout::DockerLegacy);
    let name = format!("{}/layer.tar", img.chain_ids()[1].hex());
    a.remove(&name);
    let f = a.write(&root.scratch("missing-layer.tar"));
    fails_cleanly(
        &root,
        &["load", "-i", s(&f)],
        &[&name, "not in the archive"],
    );

    let mut a = archive(std::slice::from_ref(&img), Layout::Oci(Compression::None));
    let name = format!("blobs/sha256/{}", img.diff_ids()[1].hex());
    a.remove(&name);
    let f = a.write(&root.scratch("missing-oci-layer.tar"));
    fails_cleanly(
        &root,
        &["load", "-i", s(&f)],
        &[&name, "not in the archive"],
    );

    let mut a = archive(std::slice::from_ref(&img), Layout::DockerLegacy);
    let config = format!("{}.json", img.id().trim_start_matches("sha256:"));
    a.remove(&config);
    let f = a.write(&root.scratch("missing-config.tar"));
    fails_cleanly(
        &root,
        &["load", "-i", s(&f)],
        &[&config, "not in the archive"],
    );
}

#[test]
fn load_of_a_config_whose_diff_ids_do_not_match_fails_cleanly() {
    let root = root_with_busybox("bad-diff-id");
    let mut rng = Rng::new(8);
    let (l1, _) = random_layer(&mut rng, "one", 5, 1000);
    let (l2, _) = random_layer(&mut rng, "two", 5, 1000);
    let mut img = Image::new(vec![l1, l2], &["diffid:v1"]);
    let real = img.diff_ids();
    let wrong = format!("sha256:{}", sha256_hex(b"not this layer"));
    img.diff_ids_override = Some(vec![real[0].to_string(), wrong.clone()]);
    let f = archive(std::slice::from_ref(&img), Layout::DockerLegacy).write(&root.scratch("x.tar"));
    fails_cleanly(
        &root,
        &["load", "-i", s(&f)],
        &["diff id mismatch", &wrong, &real[1].to_string()],
    );
    // A config listing fewer layers than the manifest.
    img.diff_ids_override = Some(vec![real[0].to_string()]);
    let f = archive(std::slice::from_ref(&img), Layout::DockerLegacy).write(&root.scratch("y.tar"));
    fails_cleanly(&root, &["load", "-i", s(&f)], &["1 layers", "2"]);
}

#[test]
fn load_with_an_invalid_tag_stores_nothing() {
    let root = root_with_busybox("bad-tag-in-archive");
    let img = big_image("Bad:Tag", 1000, 3);
    let f = archive(std::slice::from_ref(&img), Layout::DockerLegacy).write(&root.scratch("x.tar"));
    fails_cleanly(
        &root,
        &["load", "-i", s(&f)],
        &["Bad:Tag", "invalid reference format"],
    );
}

#[test]
fn unknown_images_are_reported_as_docker_does() {
    let root = root_with_busybox("bad-unknown-image");
    let msg = "Error: No such image: nosuch:latest";
    let save_to = root.scratch("nosuch.tar");
    for args in [
        vec!["rmi", "nosuch"],
        vec!["rmi", "-f", "nosuch"],
        vec!["image", "inspect", "nosuch"],
        vec!["save", "-o", s(&save_to), "nosuch"],
        vec!["save", "-o", s(&save_to), "busybox", "nosuch"],
        vec!["tag", "nosuch", "foo:bar"],
        vec!["history", "nosuch"],
        vec!["image", "history", "nosuch:latest"],
    ] {
        let before = state(&root);
        let out = root.run(&args);
        assert_eq!(out.code(), Some(1), "{out:?}");
        assert_eq!(one_line_error(&out.stderr), msg, "{args:?}");
        assert_unchanged(&root, &before);
        assert!(
            !save_to.exists(),
            "no partial archive is left by a failed save"
        );
    }
    assert_eq!(
        root.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]),
        "busybox:latest\n"
    );
    // Inspect prints what it found (nothing) as Docker does.
    assert_eq!(root.run(&["image", "inspect", "nosuch"]).stdout, "[]\n");
    // Save to a pipe prints nothing on stdout.
    let out = root.run(&["save", "nosuch"]);
    assert_eq!(out.code(), Some(1));
    assert!(out.stdout_raw.is_empty());
    // Unknown id prefixes.
    let out = root.run(&["rmi", "sha256:0123456789ab"]);
    assert_eq!(
        one_line_error(&out.stderr),
        "Error: No such image: sha256:0123456789ab"
    );
    let out = root.run(&["rmi", "0123456789ab"]);
    assert_eq!(
        one_line_error(&out.stderr),
        "Error: No such image: 0123456789ab:latest"
    );
}

#[test]
fn invalid_references_are_refused_with_dockers_text() {
    let root = root_with_busybox("bad-references");
    let long = "a".repeat(256);
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["tag", "busybox", "BAD:Name"],
            r#"Error: Error parsing reference: "BAD:Name" is not a valid repository/tag: invalid reference format: repository name (library/BAD) must be lowercase"#.into(),
        ),
        (
            vec!["tag", "busybox", "a b"],
            r#"Error: Error parsing reference: "a b" is not a valid repository/tag: invalid reference format"#.into(),
        ),
        (
            vec!["tag", "busybox", "foo:"],
            r#"Error: Error parsing reference: "foo:" is not a valid repository/tag: invalid reference format"#.into(),
        ),
        (
            vec!["tag", "busybox", "foo:bad!tag"],
            r#"Error: Error parsing reference: "foo:bad!tag" is not a valid repository/tag: invalid reference format"#.into(),
        ),
        (
            vec!["tag", "busybox", &long],
            format!(r#"Error: Error parsing reference: "{long}" is not a valid repository/tag: repository name must not be more than 255 characters"#),
        ),
        (
            vec!["tag", "busybox", "foo@sha256:4d9a4e3c3a8f1c1e0f5d7a9b2c6e8f0a1b3c5d7e9f1a3b5c7d9e1f3a5b7c9d1e"],
            "Error: refusing to create a tag with a digest reference".into(),
        ),
        (
            vec!["rmi", "UPPER"],
            "Error: invalid reference format: repository name (library/UPPER) must be lowercase"
                .into(),
        ),
    ];
    for (args, want) in cases {
        let before = state(&root);
        let out = root.run(&args);
        assert_eq!(out.code(), Some(1), "{out:?}");
        assert_eq!(one_line_error(&out.stderr), want, "{args:?}");
        assert_unchanged(&root, &before);
    }
    // The reference of `import` is checked before anything is read or stored.
    let line = fails_cleanly(&root, &["import", "/dev/null", "BAD:Name"], &[]);
    assert!(
        line.ends_with("invalid reference format: repository name (library/BAD) must be lowercase"),
        "{line}"
    );
    assert_eq!(
        root.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]),
        "busybox:latest\n"
    );
}

#[test]
fn import_of_a_non_tar_file_fails_cleanly() {
    let root = root_with_busybox("bad-import");
    let f = root.scratch("random.bin");
    std::fs::write(&f, Rng::new(12).bytes(200_000)).unwrap();
    fails_cleanly(&root, &["import", s(&f), "imported:v1"], &[s(&f), "tar"]);
    let missing = root.scratch("missing.tar");
    fails_cleanly(
        &root,
        &["import", s(&missing)],
        &[s(&missing), "No such file or directory"],
    );
    // A tar cut in the middle of a file.
    let tar = layer_with_files(&[("data/file", 0o644, &Rng::new(13).bytes(300_000))]);
    let cut = root.scratch("cut.tar");
    std::fs::write(&cut, &tar[..150_000]).unwrap();
    fails_cleanly(&root, &["import", s(&cut)], &[s(&cut)]);
}

#[test]
fn load_on_a_full_disk_fails_cleanly() {
    let root = TestRoot::new("full-disk");
    root.mount_tmpfs(root.root(), "16m");
    busybox(&root); // ~4 MB of blob and layer

    // A 7 MB layer loads in the ~12 MB left: a plain-tar layer is kept as its extracted
    // directory and a tar-split, not a second copy of its tar (which would not fit).
    let img = big_image("full:fits", 7 << 20, 21);
    let f = archive(std::slice::from_ref(&img), Layout::DockerLegacy).write(&root.scratch("a.tar"));
    assert_eq!(root.ok(&["load", "-i", s(&f)]), "Loaded image: full:fits\n");
    root.ok(&["rmi", "full:fits"]);

    // Its extraction does not fit.
    let img = big_image("full:extract", 14 << 20, 24);
    let f = archive(std::slice::from_ref(&img), Layout::DockerLegacy).write(&root.scratch("d.tar"));
    fails_cleanly(&root, &["load", "-i", s(&f)], &["No space left on device"]);

    // The archive is bigger than the disk (from a file and from stdin).
    let img = big_image("full:blob", 24 << 20, 22);
    let f = archive(std::slice::from_ref(&img), Layout::DockerLegacy).write(&root.scratch("b.tar"));
    fails_cleanly(&root, &["load", "-i", s(&f)], &["No space left on device"]);
    let before = state(&root);
    let out = root.run_stdin_file(&["load"], &f);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        one_line_error(&out.stderr).contains("No space left on device"),
        "{out:?}"
    );
    assert_unchanged(&root, &before);

    // The space is free again: a small image still loads.
    let small = big_image("full:small", 1 << 20, 23);
    let f =
        archive(std::slice::from_ref(&small), Layout::DockerLegacy).write(&root.scratch("c.tar"));
    assert_eq!(
        root.ok(&["load", "-i", s(&f)]),
        "Loaded image: full:small\n"
    );
    root.assert_check_clean();
    assert_eq!(root.mounts(), [root.root().to_path_buf()]);
}

#[test]
fn running_without_root_fails_with_a_clear_message() {
    let root = TestRoot::new("not-root");
    let as_nobody = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            CARREL,
            "--root",
            s(root.root()),
        ])
        .args(args)
        .env_remove("CARREL_ROOT");
        root.run_cmd(c, Input::None)
    };
    // A root that does not exist yet: nothing is created.
    let out = as_nobody(&["images"]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    let line = one_line_error(&out.stderr);
    assert!(
        line.contains("must run as root") && line.contains(s(root.root())),
        "{line}"
    );
    assert!(!root.root().exists(), "nothing was created");
    // An existing root it may not read.
    busybox(&root);
    let before = state(&root);
    let f = root.scratch("x.tar");
    std::fs::write(&f, b"").unwrap();
    for args in [
        vec!["images"],
        vec!["load", "-i", s(&f)],
        vec!["rmi", "busybox"],
    ] {
        let out = as_nobody(&args);
        assert_eq!(out.code(), Some(1), "{out:?}");
        assert!(
            one_line_error(&out.stderr).contains("must run as root"),
            "{out:?}"
        );
    }
    assert_unchanged(&root, &before);
}

// ---- 6. concurrency -------------------------------------------------------------------------

#[test]
fn concurrent_loads_of_images_sharing_layers_store_each_layer_once() {
    let root = TestRoot::new("concurrent-shared");
    let mut rng = Rng::new(31);
    let (base, base_files) = random_layer(&mut rng, "base", 200, 20_000);
    let (mid, mid_files) = random_layer(&mut rng, "mid", 50, 20_000);
    let (ta, a_files) = random_layer(&mut rng, "a", 50, 10_000);
    let (tb, b_files) = random_layer(&mut rng, "b", 50, 10_000);
    let a = Image::new(vec![base.clone(), mid.clone(), ta], &["conc:a"]);
    let b = Image::new(vec![base, mid, tb], &["conc:b"]);
    let fa = archive(std::slice::from_ref(&a), Layout::DockerLegacy).write(&root.scratch("a.tar"));
    let fb = archive(std::slice::from_ref(&b), Layout::Oci(Compression::Gzip))
        .write(&root.scratch("b.tar"));
    let mut want_a = base_files.clone();
    want_a.extend(mid_files.clone());
    let mut want_b = want_a.clone();
    want_a.extend(a_files);
    want_b.extend(b_files);
    let distinct: BTreeSet<String> = a
        .chain_ids()
        .iter()
        .chain(b.chain_ids().iter())
        .map(|d| d.to_string())
        .collect();
    assert_eq!(distinct.len(), 4);

    for round in 0..3 {
        let pa = root.spawn(
            &["load", "-i", s(&fa)],
            Stdio::null(),
            Stdio::piped(),
            Stdio::piped(),
        );
        let pb = root.spawn(
            &["load", "-i", s(&fb)],
            Stdio::null(),
            Stdio::piped(),
            Stdio::piped(),
        );
        let oa = root.wait(pa, "load a");
        let ob = root.wait(pb, "load b");
        assert!(oa.success(), "round {round}: {oa:?}");
        assert!(ob.success(), "round {round}: {ob:?}");
        assert_eq!(oa.stdout, "Loaded image: conc:a\n");
        assert_eq!(ob.stdout, "Loaded image: conc:b\n");
        assert_eq!(
            root.overlay_dirs().len(),
            distinct.len(),
            "round {round}: each shared layer exists exactly once: {:?}",
            root.overlay_dirs()
        );
        assert_eq!(list_dir(&root.path("overlay2/l")).len(), distinct.len());
        let (da, db) = (root.layer_dirs_of("conc:a"), root.layer_dirs_of("conc:b"));
        assert_eq!(
            da[..2],
            db[..2],
            "round {round}: the same base and middle directories"
        );
        assert_eq!(files_of(&root.rootfs_tree("conc:a")), want_a);
        assert_eq!(files_of(&root.rootfs_tree("conc:b")), want_b);
        root.assert_check_clean();
        assert_eq!(root.ingest_files(), Vec::<String>::new());
        root.ok(&["rmi", "conc:a", "conc:b"]);
        assert_eq!(root.overlay_dirs(), Vec::<String>::new());
    }
}

#[test]
fn loading_an_image_whose_layers_exist_leaves_no_garbage() {
    // The base layer comes first from an uncompressed archive, then again gzip-compressed: the
    // second blob is not needed and must not stay behind.
    let root = TestRoot::new("reused-layers");
    let mut rng = Rng::new(61);
    let (base, _) = random_layer(&mut rng, "base", 10, 5000);
    let (ta, _) = random_layer(&mut rng, "a", 2, 100);
    let (tb, _) = random_layer(&mut rng, "b", 2, 100);
    let a = Image::new(vec![base.clone(), ta], &["reuse:a"]);
    let b = Image::new(vec![base, tb], &["reuse:b"]);
    let fa = archive(std::slice::from_ref(&a), Layout::DockerLegacy).write(&root.scratch("a.tar"));
    let fb = archive(std::slice::from_ref(&b), Layout::Oci(Compression::Gzip))
        .write(&root.scratch("b.tar"));
    root.ok(&["load", "-i", s(&fa)]);
    root.ok(&["load", "-i", s(&fb)]);
    root.assert_check_clean();
    // Configs of a and b, layers base and a as stored the first time, b's top layer gzipped.
    assert_eq!(root.blob_files().len(), 5, "{:?}", root.blob_files());
    assert_eq!(root.overlay_dirs().len(), 3);
    // Loading an archive again stores nothing new.
    root.ok(&["load", "-i", s(&fb)]);
    root.ok(&["load", "-i", s(&fa)]);
    assert_eq!(root.blob_files().len(), 5);
    root.assert_check_clean();
}

#[test]
fn concurrent_first_commands_on_a_new_root_all_succeed() {
    for round in 0..20 {
        let root = TestRoot::new("first-use");
        let children: Vec<_> = (0..8)
            .map(|_| {
                root.spawn(
                    &["images", "-q"],
                    Stdio::null(),
                    Stdio::piped(),
                    Stdio::piped(),
                )
            })
            .collect();
        for c in children {
            let out = root.wait(c, "carrel images -q");
            assert!(out.success(), "round {round}: {out:?}");
            assert_eq!(out.stdout, "");
        }
        root.assert_check_clean();
    }
}

#[test]
fn four_concurrent_loads_of_the_same_archive() {
    let root = TestRoot::new("concurrent-same");
    let mut rng = Rng::new(41);
    let layers: Vec<(Vec<u8>, BTreeMap<PathBuf, String>)> = (0..3)
        .map(|i| random_layer(&mut rng, &format!("l{i}"), 100, 20_000))
        .collect();
    let want: BTreeMap<PathBuf, String> = layers.iter().flat_map(|(_, f)| f.clone()).collect();
    let img = Image::new(layers.into_iter().map(|(l, _)| l).collect(), &["same:v1"]);
    let f = archive(std::slice::from_ref(&img), Layout::DockerLegacy).write(&root.scratch("x.tar"));
    let children: Vec<_> = (0..4)
        .map(|_| {
            root.spawn(
                &["load", "-i", s(&f)],
                Stdio::null(),
                Stdio::piped(),
                Stdio::piped(),
            )
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let out = root.wait(c, &format!("load #{i}"));
        assert!(out.success(), "{out:?}");
        assert_eq!(out.stdout, "Loaded image: same:v1\n");
    }
    assert_eq!(root.image_ids(), [img.id()]);
    assert_eq!(root.overlay_dirs().len(), 3, "{:?}", root.overlay_dirs());
    assert_eq!(files_of(&root.rootfs_tree("same:v1")), want);
    root.assert_check_clean();
    assert_eq!(root.ingest_files(), Vec::<String>::new());
}

// ---- 7. crash safety ------------------------------------------------------------------------

#[test]
fn kill_9_during_load_leaves_no_partial_image() {
    // ~40 MB: five layers of many files, the fourth deleting and replacing some of them.
    let mut rng = Rng::new(51);
    let mut layers = Vec::new();
    let mut expected = Vec::new();
    for i in 0..3 {
        let (l, files) = random_layer(&mut rng, &format!("layer{i}"), 250, 40_000);
        layers.push(l);
        expected.push(files);
    }
    let mut l4 = TarBuilder::new();
    l4.dir("layer0", 0o755)
        .whiteout("layer0/f0000")
        .file("layer0/f0001", 0o600, b"replaced");
    layers.push(l4.into_bytes());
    let (l5, files5) = random_layer(&mut rng, "layer4", 200, 40_000);
    layers.push(l5);
    let img = Image::new(layers, &["crash:v1"]);

    let root = TestRoot::new("crash");
    let file =
        archive(std::slice::from_ref(&img), Layout::DockerLegacy).write(&root.scratch("big.tar"));
    let size = std::fs::metadata(&file).unwrap().len();
    assert!((30 << 20..=60 << 20).contains(&size), "archive size {size}");

    // A load nobody interrupts: the layers it makes, and how long it takes in this root.
    let start = Instant::now();
    root.ok(&["load", "-i", s(&file)]);
    let full = start.elapsed();
    let want = layer_trees(&root, "crash:v1");
    assert_eq!(want.len(), 5);
    for (n, i) in [(0, 0), (1, 1), (2, 2)] {
        assert_eq!(files_of(&want[n]), expected[i], "layer {n}");
    }
    assert_eq!(files_of(&want[4]), files5, "layer 4");
    assert!(want[3][Path::new("layer0/f0000")].is_whiteout());
    assert_eq!(
        want[3][Path::new("layer0/f0001")].sha256.as_deref(),
        Some(sha256_hex(b"replaced").as_str())
    );
    root.ok(&["rmi", "crash:v1"]);
    root.assert_check_clean();

    let (mut rng, seed) = Rng::from_time();
    let runs = 10;
    let mut outcomes = Vec::new();
    for i in 0..runs {
        // Spread the kills over the whole load (run i in the i-th tenth), stretched: loads
        // after a recovery (and with other tests sharing the machine) take longer.
        let frac = (i as f64 + rng.unit()) / runs as f64 * 1.2;
        let delay = full.mul_f64(frac);
        let via_stdin = i % 2 == 1;
        let mut c = root.command(&["load", "-i", s(&file)]);
        if via_stdin {
            c = root.command(&["load"]);
            c.stdin(Stdio::from(std::fs::File::open(&file).unwrap()));
        } else {
            c.stdin(Stdio::null());
        }
        c.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = root.spawn_cmd(c);
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        root.forget_pid(child.id());
        let what = format!(
            "run {i} (seed {seed}, killed after {delay:?} of {full:?}, stdin: {via_stdin}, {status})"
        );

        // Any command recovers; the image is either whole or absent.
        let ids = root.image_ids();
        let present = match ids.as_slice() {
            [] => false,
            [id] if *id == img.id() => true,
            other => panic!("{what}: unexpected images {other:?}"),
        };
        root.assert_check_clean();
        assert_eq!(
            root.ingest_files(),
            Vec::<String>::new(),
            "{what}: ingest files left"
        );
        if present {
            let got = layer_trees(&root, "crash:v1");
            for (n, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_trees_eq(w, g, &format!("{what}: layer {n}"));
            }
            assert_eq!(root.overlay_dirs().len(), 5, "{what}");
            root.ok(&["rmi", "crash:v1"]);
        }
        assert_eq!(
            root.overlay_dirs(),
            Vec::<String>::new(),
            "{what}: orphan layer dirs"
        );
        assert_eq!(
            list_dir(&root.path("overlay2/l")),
            Vec::<String>::new(),
            "{what}"
        );
        assert_eq!(
            root.blob_files(),
            Vec::<String>::new(),
            "{what}: orphan blobs"
        );
        eprintln!(
            "{what}: image {}",
            if present { "complete" } else { "absent" }
        );
        outcomes.push((status.signal() == Some(libc::SIGKILL), present));
    }
    eprintln!("kill -9 during load: (killed, image complete) per run: {outcomes:?}");
    let killed = outcomes.iter().filter(|(k, _)| *k).count();
    assert!(
        killed >= runs / 2,
        "most loads must really be killed while running: {outcomes:?}"
    );

    // Finally a load that is not interrupted gives the complete image.
    assert_eq!(
        root.ok(&["load", "-i", s(&file)]),
        "Loaded image: crash:v1\n"
    );
    let got = layer_trees(&root, "crash:v1");
    assert_eq!(got.len(), want.len());
    for (n, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_trees_eq(w, g, &format!("final load: layer {n}"));
    }
    root.assert_check_clean();
}

// ---- 8. deep chains -------------------------------------------------------------------------

#[test]
fn deep_chain_of_500_layers_loads_inspects_and_saves() {
    const N: usize = 500;
    let root = TestRoot::new("deep");
    let layers: Vec<Vec<u8>> = (1..=N)
        .map(|i| {
            let mut t = TarBuilder::new();
            t.dir("layers", 0o755)
                .file(
                    &format!("layers/file{i}"),
                    0o644,
                    format!("{i}\n").as_bytes(),
                )
                .file("top", 0o644, format!("top {i}\n").as_bytes());
            t.into_bytes()
        })
        .collect();
    let img = Image::new(layers, &["deep:500"]);
    let f =
        archive(std::slice::from_ref(&img), Layout::DockerLegacy).write(&root.scratch("deep.tar"));
    let start = Instant::now();
    assert_eq!(
        root.ok(&["load", "-q", "-i", s(&f)]),
        "Loaded image: deep:500\n"
    );
    eprintln!("500 layers loaded in {:?}", start.elapsed());

    let v = root.inspect("deep:500");
    assert_eq!(v["Id"], img.id().as_str());
    let diff_ids: Vec<String> = img.diff_ids().iter().map(|d| d.to_string()).collect();
    assert_eq!(str_vec(&v["RootFS"]["Layers"]), diff_ids);
    let data = &v["GraphDriver"]["Data"];
    let lower: Vec<&str> = data["LowerDir"].as_str().unwrap().split(':').collect();
    assert_eq!(lower.len(), N - 1, "LowerDir lists every lower layer");
    let upper = PathBuf::from(data["UpperDir"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(upper.join("top")).unwrap(),
        format!("top {N}\n")
    );
    assert_eq!(
        std::fs::read_to_string(upper.join(format!("layers/file{N}"))).unwrap(),
        format!("{N}\n")
    );
    // Nearest parent first, the base layer last.
    assert!(
        Path::new(lower[0])
            .join(format!("layers/file{}", N - 1))
            .is_file()
    );
    assert_eq!(
        std::fs::read_to_string(Path::new(lower[N - 2]).join("top")).unwrap(),
        "top 1\n"
    );
    assert_eq!(root.overlay_dirs().len(), N);
    assert_eq!(root.ok(&["history", "-q", "deep:500"]).lines().count(), N);

    let saved = root.scratch("saved.tar");
    root.ok(&["save", "-o", s(&saved), "deep:500"]);
    let other = TestRoot::new("deep-copy");
    assert_eq!(
        other.ok(&["load", "-q", "-i", s(&saved)]),
        "Loaded image: deep:500\n"
    );
    let w = other.inspect("deep:500");
    assert_eq!(w["Id"], v["Id"]);
    assert_eq!(w["RootFS"], v["RootFS"]);
    let other_upper = PathBuf::from(w["GraphDriver"]["Data"]["UpperDir"].as_str().unwrap());
    assert_trees_eq(
        &tree(&upper),
        &tree(&other_upper),
        "top layer after save/load",
    );
    other.assert_check_clean();
    root.assert_check_clean();
    eprintln!(
        "500 layers: load, inspect, save and load again in {:?}",
        start.elapsed()
    );
}

#[test]
fn docker_units_oracles() {
    // The oracles themselves, against values Docker prints.
    assert_eq!(docker_size(1_982_771, 3), "1.98MB");
    assert_eq!(docker_size(0, 4), "0B");
    assert_eq!(docker_size(999, 3), "999B");
    assert_eq!(docker_size(1000, 3), "1kB");
    assert_eq!(docker_size(12_345_678_901, 4), "12.35GB");
    assert_eq!(
        docker_duration(Duration::from_secs(0)),
        "Less than a second"
    );
    assert_eq!(docker_duration(Duration::from_secs(90)), "About a minute");
    assert_eq!(docker_duration(Duration::from_secs(3 * 86400)), "3 days");
    assert_eq!(
        docker_duration(Duration::from_secs(200 * 86400)),
        "6 months"
    );
    assert_eq!(
        docker_table(&[
            row(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]),
            row(&[
                "busybox",
                "latest",
                "259373563578",
                "6 months ago",
                "1.98MB"
            ])
        ]),
        "REPOSITORY   TAG       IMAGE ID       CREATED        SIZE\nbusybox      latest    259373563578   6 months ago   1.98MB\n"
    );
}
