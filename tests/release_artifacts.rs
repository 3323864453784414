//! `make release-artifacts` (its script, `.ci/release-artifacts`) with a throwaway
//! cosign key: every artifact's signature verifies with the public key (and a tampered
//! copy's does not), SHA256SUMS holds, the binary's SBOM names every crate of Cargo.lock
//! the binary is built from, the image's SBOM names its Debian packages, the image and
//! the krew archive carry the same binary, and krew installs the plugin from the archive
//! with the generated manifest (and refuses it when the sha256 is wrong), after which
//! `kubectl poolwarden` runs.

#[path = "support/tools.rs"]
mod tools;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

const PASSWORD: &str = "throwaway-test-password";

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    ring::digest::digest(&ring::digest::SHA256, &bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct Release {
    tmp: tempfile::TempDir,
    dist: PathBuf,
    /// The throwaway public key, made by the test (not the one in dist/).
    public_key: PathBuf,
    cosign: PathBuf,
    files: BTreeMap<String, PathBuf>,
}

impl Release {
    /// The one artifact whose name ends with `suffix`.
    fn file(&self, suffix: &str) -> &Path {
        let found: Vec<&PathBuf> = self
            .files
            .iter()
            .filter(|(n, _)| n.ends_with(suffix))
            .map(|(_, p)| p)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one artifact ending in {suffix}: {:?}",
            self.files.keys()
        );
        found[0]
    }
}

/// One release, made once (minutes on a cold machine: the tools, the image), then
/// checked part by part.
#[test]
fn release_artifacts_are_signed_summed_described_and_installable() {
    let release = make_release();
    every_artifact_is_listed_in_sha256sums_and_the_sums_hold(&release);
    every_signature_verifies_with_the_key_and_a_tampered_file_does_not(&release);
    the_binary_sbom_lists_every_crate_the_binary_is_built_from(&release);
    the_image_sbom_lists_its_debian_packages(&release);
    the_image_and_the_plugin_archive_carry_the_same_binary(&release);
    the_chart_archive_holds_the_chart_and_its_crd(&release);
    krew_installs_the_plugin_from_the_archive_and_kubectl_runs_it(&release);
}

fn make_release() -> Release {
    {
        let cosign = tools::ensure_tool("cosign");
        let tmp = tempfile::tempdir().unwrap();
        run(Command::new(&cosign)
            .arg("generate-key-pair")
            .current_dir(tmp.path())
            .env("COSIGN_PASSWORD", PASSWORD));
        let dist = tmp.path().join("dist");
        let out = run(Command::new("bash")
            .arg(".ci/release-artifacts")
            .arg(&dist)
            .env("COSIGN_KEY", tmp.path().join("cosign.key"))
            .env("COSIGN_PASSWORD", PASSWORD)
            .env_remove("POOLWARDEN_IMAGE_LAYOUT"));
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        let files = std::fs::read_dir(&dist)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().to_string_lossy().into_owned(), e.path())
            })
            .collect();
        Release {
            public_key: tmp.path().join("cosign.pub"),
            tmp,
            dist,
            cosign,
            files,
        }
    }
}

/// The artifacts SHA256SUMS lists, by name, with their sums.
fn sums(release: &Release) -> BTreeMap<String, String> {
    std::fs::read_to_string(release.dist.join("SHA256SUMS"))
        .unwrap()
        .lines()
        .map(|line| {
            let (sum, name) = line
                .split_once("  ")
                .unwrap_or_else(|| panic!("SHA256SUMS line {line:?}"));
            (name.to_owned(), sum.to_owned())
        })
        .collect()
}

fn verify_blob(release: &Release, file: &Path, signature: &Path) -> Output {
    Command::new(&release.cosign)
        .args(["verify-blob", "--insecure-ignore-tlog=true", "--key"])
        .arg(&release.public_key)
        .arg("--signature")
        .arg(signature)
        .arg(file)
        .output()
        .expect("run cosign verify-blob")
}

fn every_artifact_is_listed_in_sha256sums_and_the_sums_hold(release: &Release) {
    let sums = sums(release);
    let artifacts: BTreeSet<&String> = release
        .files
        .keys()
        .filter(|n| !n.ends_with(".sig") && *n != "SHA256SUMS" && *n != "cosign.pub")
        .collect();
    assert_eq!(
        artifacts,
        sums.keys().collect(),
        "SHA256SUMS lists exactly the artifacts"
    );
    for kind in [
        "-image-oci.tar",
        "-image.payload.json",
        "-image.cdx.json",
        ".tar.gz",
        "-amd64.cdx.json",
        "poolwarden.krew.yaml",
    ] {
        assert!(
            sums.keys().any(|n| n.ends_with(kind)),
            "no {kind} artifact: {:?}",
            sums.keys()
        );
    }
    assert!(
        sums.keys().any(|n| n.ends_with(".tgz")),
        "no packaged chart: {:?}",
        sums.keys()
    );
    for (name, sum) in &sums {
        assert_eq!(&sha256_hex(&release.dist.join(name)), sum, "{name}");
    }
    // And as a user checks them.
    run(Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(&release.dist));
}

fn every_signature_verifies_with_the_key_and_a_tampered_file_does_not(release: &Release) {
    assert_eq!(
        std::fs::read_to_string(release.dist.join("cosign.pub")).unwrap(),
        std::fs::read_to_string(&release.public_key).unwrap(),
        "dist/cosign.pub is the signing key's public half"
    );
    let mut signed: Vec<String> = sums(release).into_keys().collect();
    signed.push("SHA256SUMS".into());
    for name in &signed {
        let signature = release.dist.join(format!("{name}.sig"));
        assert!(signature.is_file(), "{name} has no signature");
        let out = verify_blob(release, &release.dist.join(name), &signature);
        assert!(
            out.status.success(),
            "cosign verify-blob {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The check can fail: one byte more and the signature no longer matches.
    let tampered = release.tmp.path().join("tampered");
    let mut bytes = std::fs::read(release.dist.join("SHA256SUMS")).unwrap();
    bytes.push(b'\n');
    std::fs::write(&tampered, bytes).unwrap();
    let out = verify_blob(release, &tampered, &release.dist.join("SHA256SUMS.sig"));
    assert!(!out.status.success(), "a tampered SHA256SUMS verified");
}

/// The packages (name, version) the binary is built from, per `cargo metadata` for the
/// host target: everything reachable from poolwarden through normal and build
/// dependencies (build scripts' and proc macros' crates shape the binary too; the SBOM
/// lists them with scope "excluded"). Dev-dependencies (the sandbox, proptest,
/// tempfile) build only the tests and benches, and are not in it.
fn crates_of_the_binary() -> BTreeSet<(String, String)> {
    let host = String::from_utf8(run(Command::new("rustc").arg("-vV")).stdout).unwrap();
    let host = host.lines().find_map(|l| l.strip_prefix("host: ")).unwrap().to_owned();
    let out = run(Command::new(env!("CARGO")).args([
        "metadata",
        "--format-version",
        "1",
        "--locked",
        "--filter-platform",
        &host,
    ]));
    let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages: BTreeMap<&str, (String, String)> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap(),
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["version"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    let nodes: BTreeMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root = packages
        .iter()
        .find(|(_, (n, _))| n == "poolwarden")
        .map(|(id, _)| *id)
        .unwrap();
    let mut seen = BTreeSet::from([root]);
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let linked = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null() || k["kind"] == "build");
            let dep_id = dep["pkg"].as_str().unwrap();
            if linked && seen.insert(dep_id) {
                todo.push(dep_id);
            }
        }
    }
    seen.iter().map(|id| packages[id].clone()).collect()
}

fn cyclonedx_components(path: &Path) -> BTreeSet<(String, String)> {
    let sbom: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(sbom["bomFormat"], "CycloneDX", "{}", path.display());
    let mut components = BTreeSet::new();
    if let Some(c) = sbom["metadata"]["component"].as_object() {
        components.insert((
            c["name"].as_str().unwrap_or_default().to_owned(),
            c["version"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    fn visit(list: &Value, out: &mut BTreeSet<(String, String)>) {
        for c in list.as_array().into_iter().flatten() {
            out.insert((
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["version"].as_str().unwrap_or_default().to_owned(),
            ));
            visit(&c["components"], out);
        }
    }
    visit(&sbom["components"], &mut components);
    components
}

fn the_binary_sbom_lists_every_crate_the_binary_is_built_from(release: &Release) {
    let listed = cyclonedx_components(release.file("-amd64.cdx.json"));
    let built = crates_of_the_binary();
    let missing: Vec<_> = built.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "crates of the binary missing from its SBOM: {missing:?}"
    );
    // And nothing else: no dev-dependency (the sandbox, proptest), no other platform's.
    let extra: Vec<_> = listed.difference(&built).collect();
    assert!(
        extra.is_empty(),
        "SBOM components the binary is not built from: {extra:?}"
    );
    assert!(!listed.iter().any(|(n, _)| n == "poolwarden-sandbox" || n == "proptest"));
    // Not vacuous: the graph is the real one (kube, tokio-postgres, rustls, ...).
    assert!(built.len() > 150, "only {} crates in the binary's graph", built.len());
    for name in ["kube", "tokio-postgres", "rustls", "ring"] {
        assert!(listed.iter().any(|(n, _)| n == name), "{name} not in the SBOM");
    }
    eprintln!("the binary's SBOM lists the {} crates it is built from", built.len());
}

fn the_image_sbom_lists_its_debian_packages(release: &Release) {
    let sbom: Value = serde_json::from_slice(&std::fs::read(release.file("-image.cdx.json")).unwrap()).unwrap();
    let debs: BTreeMap<String, String> = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["purl"].as_str().is_some_and(|p| p.starts_with("pkg:deb/")))
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // The pinned base packages of tools/image/debian-packages, at their pinned versions.
    let pins = std::fs::read_to_string("tools/image/debian-packages").expect("tools/image/debian-packages");
    let mut pinned = 0;
    for line in pins.lines().filter(|l| l.starts_with(|c: char| c.is_ascii_lowercase())) {
        let mut fields = line.split_whitespace();
        let (name, version) = (fields.next().unwrap(), fields.next().unwrap());
        assert_eq!(
            debs.get(name).map(String::as_str),
            Some(version),
            "{name} in the image SBOM: {debs:?}"
        );
        pinned += 1;
    }
    assert!(pinned >= 3, "tools/image/debian-packages pins {pinned} packages");
}

/// The image's manifest digest (checked against the manifest's bytes) and every regular
/// file of its layers (each layer checked against its digest), by path, with its sha256.
fn image_files(release: &Release) -> (String, BTreeMap<String, String>) {
    let dir = release.tmp.path().join("layout");
    std::fs::create_dir_all(&dir).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(release.file("-image-oci.tar"))
        .arg("-C")
        .arg(&dir));
    let blob = |digest: &str| dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    assert_eq!(
        format!("sha256:{}", sha256_hex(&blob(&digest))),
        digest,
        "the manifest matches its digest"
    );
    let manifest: Value = serde_json::from_slice(&std::fs::read(blob(&digest)).unwrap()).unwrap();
    let mut files = BTreeMap::new();
    for (i, layer) in manifest["layers"].as_array().unwrap().iter().enumerate() {
        let digest = layer["digest"].as_str().unwrap();
        let path = blob(digest);
        assert_eq!(
            format!("sha256:{}", sha256_hex(&path)),
            digest,
            "layer {i} matches its digest"
        );
        let root = dir.join(format!("layer{i}"));
        std::fs::create_dir_all(&root).unwrap();
        run(Command::new("tar").arg("-xf").arg(&path).arg("-C").arg(&root));
        for entry in walk(&root) {
            let name = entry.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
            files.insert(name, sha256_hex(&entry));
        }
    }
    (digest, files)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            out.extend(walk(&e.path()));
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    out
}

fn the_image_and_the_plugin_archive_carry_the_same_binary(release: &Release) {
    let (digest, files) = image_files(release);
    // The image's signature is cosign's own payload for exactly this manifest digest
    // (its signature verified above, with every file's).
    let payload: Value = serde_json::from_slice(&std::fs::read(release.file("-image.payload.json")).unwrap()).unwrap();
    assert_eq!(
        payload["critical"]["type"], "cosign container image signature",
        "{payload}"
    );
    assert_eq!(
        payload["critical"]["image"]["docker-manifest-digest"],
        digest.as_str(),
        "{payload}"
    );
    let plugin = release.tmp.path().join("plugin");
    std::fs::create_dir_all(&plugin).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(release.file(".tar.gz"))
        .arg("-C")
        .arg(&plugin));
    let mut names: Vec<String> = std::fs::read_dir(&plugin)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["LICENSE", "poolwarden"]);
    assert_eq!(
        files.get("poolwarden"),
        Some(&sha256_hex(&plugin.join("poolwarden"))),
        "the image's /poolwarden is the archive's binary"
    );
}

fn krew_installs_the_plugin_from_the_archive_and_kubectl_runs_it(release: &Release) {
    let krew = tools::ensure_tool("krew");
    let root = release.tmp.path().join("krew-test");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(&krew, bin.join("kubectl-krew")).unwrap();
    let krew_root = root.join("krew-root");
    let path = format!(
        "{}:{}:{}",
        bin.display(),
        krew_root.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl = |args: &[&str]| {
        let mut cmd = Command::new("kubectl");
        cmd.args(args)
            .env("PATH", &path)
            .env("KREW_ROOT", &krew_root)
            .env("KUBECONFIG", root.join("no-kubeconfig"))
            .stdin(std::process::Stdio::null());
        cmd
    };
    let manifest = release.file("poolwarden.krew.yaml");
    let archive = release.file(".tar.gz");

    // A manifest whose sha256 is not the archive's is refused: the check is real.
    let wrong = root.join("wrong-sha.yaml");
    let text = std::fs::read_to_string(manifest).unwrap();
    let sum = sha256_hex(archive);
    assert!(
        text.contains(&sum),
        "the manifest carries the archive's sha256 {sum}:\n{text}"
    );
    std::fs::write(&wrong, text.replace(&sum, &"0".repeat(64))).unwrap();
    let out = kubectl(&[
        "krew",
        "install",
        &format!("--manifest={}", wrong.display()),
        &format!("--archive={}", archive.display()),
    ])
    .output()
    .unwrap();
    assert!(
        !out.status.success(),
        "krew installed an archive whose sha256 does not match"
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("checksum") || said.contains("sha256"),
        "krew's refusal: {said}"
    );

    run(&mut kubectl(&[
        "krew",
        "install",
        &format!("--manifest={}", manifest.display()),
        &format!("--archive={}", archive.display()),
    ]));
    let installed = krew_root.join("bin/kubectl-poolwarden");
    assert!(installed.exists(), "krew made no {}", installed.display());
    // krew's record of the install (`krew list` needs an index, which a manifest install
    // does not make).
    let receipt = std::fs::read_to_string(krew_root.join("receipts/poolwarden.yaml")).expect("krew's receipt");
    assert!(
        receipt.contains(&sum),
        "the receipt names the archive's sha256:\n{receipt}"
    );
    let plugins = run(&mut kubectl(&["plugin", "list", "--name-only"]));
    assert!(
        String::from_utf8_lossy(&plugins.stdout).contains("kubectl-poolwarden"),
        "kubectl plugin list: {plugins:?}"
    );
    let help = run(&mut kubectl(&["poolwarden", "status", "--help"]));
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("kubectl poolwarden status"),
        "kubectl poolwarden status --help:\n{help}"
    );
    let version = run(&mut kubectl(&["poolwarden", "--version"]));
    assert!(
        String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")),
        "kubectl poolwarden --version: {version:?}"
    );
}

fn the_chart_archive_holds_the_chart_and_its_crd(release: &Release) {
    let listing = run(Command::new("tar").arg("-tzf").arg(release.file(".tgz")));
    let listing = String::from_utf8_lossy(&listing.stdout);
    for path in [
        "poolwarden/Chart.yaml",
        "poolwarden/values.schema.json",
        "poolwarden/templates/deployment.yaml",
        "poolwarden/crds/poolpolicies.poolwarden.io.yaml",
    ] {
        assert!(
            listing.lines().any(|l| l == path),
            "{path} not in the chart archive:\n{listing}"
        );
    }
}
