//! The image `make image` builds (tools/image/build.sh): its OCI layout is unpacked
//! with umoci into a runtime bundle and its entrypoint run by an OCI runtime (Debian's
//! runc), as a node would run it — the process, user, env and working directory are
//! the ones umoci derives from the image's config, not the test's. runc rather than a
//! mount namespace and chroot: the runtime applies the image config itself (user,
//! no_new_privs, capabilities, its own pid and mount namespaces), so what is checked
//! is what a kubelet's runtime would start. Only the network namespace is the host's,
//! so that the image reaches the test's PostgreSQL on 127.0.0.1.
//!
//! Needs root (umoci unpacks as root; runc) and Debian's umoci and runc (.ci/setup).

mod support;

use std::{
    collections::BTreeMap,
    io::Read,
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::{throwaway_pg::ThrowawayPg, tls::certificates, waits::scaled};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The layout `make image` writes, built once per test binary (the release build is a
/// no-op when `make image` ran before; the layout is assembled anew, in seconds).
fn layout() -> &'static Path {
    static LAYOUT: OnceLock<PathBuf> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let out = Command::new("bash")
            .arg("tools/image/build.sh")
            .stderr(Stdio::inherit())
            .output()
            .expect("run tools/image/build.sh");
        assert!(
            out.status.success(),
            "tools/image/build.sh failed (see its output above)"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = stdout.lines().last().expect("build.sh prints the layout's path");
        PathBuf::from(path.trim())
    })
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    layout.join("blobs/sha256").join(hex)
}

/// The image config of the layout's tag `tag`, through index.json and the manifest.
fn image_config(layout: &Path, tag: &str) -> Value {
    let manifest = read_json(&blob(layout, &manifest_digest(layout, tag)));
    read_json(&blob(layout, manifest["config"]["digest"].as_str().unwrap()))
}

/// The final stage of the Dockerfile as (instruction, arguments), continuation lines
/// joined and comments dropped.
fn dockerfile_final_stage() -> Vec<(String, String)> {
    let text = std::fs::read_to_string("Dockerfile").unwrap();
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && pending.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                pending.push_str(part);
                pending.push(' ');
            }
            None => {
                pending.push_str(t);
                let (word, rest) = pending.split_once(' ').unwrap_or((pending.as_str(), ""));
                instructions.push((word.to_uppercase(), rest.trim().to_owned()));
                pending.clear();
            }
        }
    }
    let last_from = instructions
        .iter()
        .rposition(|(word, _)| word == "FROM")
        .expect("a FROM in the Dockerfile");
    instructions.split_off(last_from + 1)
}

/// `k=v k=v` (LABEL, ENV) as pairs; the Dockerfile quotes none of its values.
fn pairs(args: &str) -> Vec<(String, String)> {
    args.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("not k=v: {kv}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// What the Dockerfile's final stage sets, in the image config's terms.
fn dockerfile_config() -> Value {
    let mut labels = BTreeMap::new();
    let mut env = Vec::new();
    let mut config = serde_json::Map::new();
    for (word, args) in dockerfile_final_stage() {
        match word.as_str() {
            "LABEL" => labels.extend(pairs(&args)),
            "ENV" => env.extend(pairs(&args).into_iter().map(|(k, v)| format!("{k}={v}"))),
            "WORKDIR" => {
                config.insert("WorkingDir".into(), json!(args));
            }
            "USER" => {
                config.insert("User".into(), json!(args));
            }
            "EXPOSE" => {
                let port = if args.contains('/') {
                    args
                } else {
                    format!("{args}/tcp")
                };
                config.insert("ExposedPorts".into(), json!({ port: {} }));
            }
            "ENTRYPOINT" => {
                config.insert("Entrypoint".into(), serde_json::from_str(&args).unwrap());
            }
            "CMD" => {
                config.insert("Cmd".into(), serde_json::from_str(&args).unwrap());
            }
            "COPY" => {}
            other => panic!("the test does not know the Dockerfile's {other} {args}"),
        }
    }
    config.insert("Labels".into(), json!(labels));
    config.insert("Env".into(), json!(env));
    Value::Object(config)
}

#[test]
fn the_image_and_the_dockerfile_describe_the_same_container() {
    let layout = layout();
    let image = image_config(layout, VERSION);
    assert_eq!(image["os"], "linux");
    assert_eq!(image["architecture"], "amd64");
    let dockerfile = dockerfile_config();
    assert_eq!(
        image["config"], dockerfile,
        "the image (left) and the Dockerfile's final stage (right) differ"
    );
    assert_eq!(image["config"]["Entrypoint"], json!(["/poolwarden"]));
    assert_eq!(image["config"]["User"], "65532:65532");
    assert_eq!(image["config"]["Labels"]["org.opencontainers.image.version"], VERSION);
    // `dev` names the same image (what the chart's tests run).
    assert_eq!(image_config(layout, "dev"), image);
    // One history entry per layer, base then binary.
    assert_eq!(image["history"].as_array().map(Vec::len), Some(2), "{image}");
    assert_eq!(image["rootfs"]["diff_ids"].as_array().map(Vec::len), Some(2), "{image}");
}

/// The manifest digest of the layout's tag `tag`.
fn manifest_digest(layout: &Path, tag: &str) -> String {
    let index = read_json(&layout.join("index.json"));
    let entry = index["manifests"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        })
        .unwrap_or_else(|| panic!("no tag {tag} in {index}"));
    entry["digest"].as_str().unwrap().to_owned()
}

#[test]
fn the_layout_is_reproducible() {
    let first = manifest_digest(layout(), VERSION);
    // A second build, elsewhere, later: every timestamp is SOURCE_DATE_EPOCH.
    std::thread::sleep(Duration::from_secs(1));
    let again = tempfile::tempdir().unwrap();
    let out = again.path().join("oci");
    let status = Command::new("bash")
        .arg("tools/image/build.sh")
        .env("POOLWARDEN_IMAGE_OUT", &out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(manifest_digest(&out, VERSION), first);
}

/// An unpacked copy of the image: the test may change its root filesystem.
struct Bundle {
    dir: tempfile::TempDir,
}

static CONTAINERS: AtomicU32 = AtomicU32::new(0);

impl Bundle {
    fn unpack() -> Bundle {
        let layout = layout();
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{VERSION}", layout.display()))
            .arg(dir.path().join("bundle"))
            .output()
            .expect("umoci (Debian's; .ci/setup installs it)");
        assert!(
            out.status.success(),
            "umoci unpack: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Each run rewrites config.json; the image's own stays beside it.
        let bundle = Bundle { dir };
        std::fs::copy(
            bundle.path().join("config.json"),
            bundle.path().join("config.image.json"),
        )
        .unwrap();
        bundle
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    fn rootfs(&self) -> PathBuf {
        self.path().join("rootfs")
    }

    /// The runtime config umoci derived from the image config.
    fn runtime_config(&self) -> Value {
        read_json(&self.path().join("config.image.json"))
    }

    /// The image's process with `args` after its entrypoint in place of its Cmd (or,
    /// with `replace_entrypoint`, `args` alone); no terminal; the host's network.
    fn prepare(&self, args: &[&str], replace_entrypoint: bool) {
        let mut config = self.runtime_config();
        let process = &mut config["process"];
        process["terminal"] = json!(false);
        let mut argv: Vec<Value> = if replace_entrypoint {
            Vec::new()
        } else {
            // The entrypoint as umoci derived it: Entrypoint then Cmd.
            let derived = process["args"].as_array().cloned().unwrap_or_default();
            assert_eq!(derived, vec![json!("/poolwarden"), json!("controller")]);
            derived[..1].to_vec()
        };
        argv.extend(args.iter().map(|a| json!(a)));
        process["args"] = json!(argv);
        let namespaces = config["linux"]["namespaces"].as_array_mut().unwrap();
        namespaces.retain(|n| n["type"] != "network");
        std::fs::write(self.path().join("config.json"), config.to_string()).unwrap();
    }

    fn runc(&self) -> Command {
        let mut runc = Command::new("runc");
        runc.arg("--root").arg(self.dir.path().join("runc-state"));
        runc
    }

    fn container_id() -> String {
        format!(
            "poolwarden-image-test-{}-{}",
            std::process::id(),
            CONTAINERS.fetch_add(1, Ordering::SeqCst)
        )
    }

    /// Runs to the end; stdout, stderr, status.
    fn run(&self, args: &[&str], replace_entrypoint: bool) -> Output {
        self.prepare(args, replace_entrypoint);
        let id = Bundle::container_id();
        let out = self
            .runc()
            .args(["run", "--bundle"])
            .arg(self.path())
            .arg(&id)
            .stdin(Stdio::null())
            .output()
            .expect("runc (Debian's; .ci/setup installs it)");
        let _ = self.runc().args(["delete", "--force", &id]).output();
        out
    }

    /// Starts it; the caller stops it with [`Running::stop`].
    fn start(&self, args: &[&str]) -> Running<'_> {
        self.prepare(args, false);
        let id = Bundle::container_id();
        let pid_file = self.dir.path().join("pid");
        let child = self
            .runc()
            .args(["run", "--bundle"])
            .arg(self.path())
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runc (Debian's; .ci/setup installs it)");
        Running {
            bundle: self,
            id,
            pid_file,
            child,
        }
    }
}

struct Running<'a> {
    bundle: &'a Bundle,
    id: String,
    pid_file: PathBuf,
    child: Child,
}

impl Running<'_> {
    /// The process's pid on the host, once runc has written it.
    fn pid(&mut self) -> u32 {
        let deadline = Instant::now() + scaled(Duration::from_secs(30));
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.pid_file)
                && let Ok(pid) = text.trim().parse()
            {
                return pid;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("runc ended ({status}) before writing its pid file: {}", self.output());
            }
            assert!(Instant::now() < deadline, "runc wrote no pid file in time");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn output(&mut self) -> String {
        let mut text = String::new();
        if let Some(out) = self.child.stdout.as_mut() {
            let _ = out.read_to_string(&mut text);
        }
        if let Some(err) = self.child.stderr.as_mut() {
            let _ = err.read_to_string(&mut text);
        }
        text
    }

    fn stop(mut self) {
        let _ = self.bundle.runc().args(["kill", &self.id, "KILL"]).output();
        let _ = self.child.wait();
        let _ = self.bundle.runc().args(["delete", "--force", &self.id]).output();
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.bundle.runc().args(["kill", &self.id, "KILL"]).output();
            let _ = self.child.wait();
        }
        let _ = self.bundle.runc().args(["delete", "--force", &self.id]).output();
    }
}

/// `Uid:`/`Gid:` of /proc/<pid>/status: real, effective, saved, filesystem.
fn ids(pid: u32, field: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status:\n{status}"))
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_entrypoint_runs_as_65532_with_no_shell_in_the_image() {
    let bundle = Bundle::unpack();
    let config = bundle.runtime_config();
    assert_eq!(config["process"]["user"]["uid"], 65532);
    assert_eq!(config["process"]["user"]["gid"], 65532);

    // `poolwarden --version`, through the entrypoint.
    let version = bundle.run(&["--version"], false);
    assert!(version.status.success(), "{}", text(&version));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("poolwarden {VERSION}")
    );

    // The running process's ids, seen from the host: it is held in its connection to
    // a listener that never answers, long enough to be looked at.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let wait = scaled(Duration::from_secs(60)).as_secs().to_string();
    let url = format!("postgres://nobody@127.0.0.1:{port}/nothing?sslmode=disable&connect_timeout={wait}");
    let mut running = bundle.start(&["inspect", "--database-url", &url]);
    let pid = running.pid();
    silent.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + scaled(Duration::from_secs(30));
    let _held = loop {
        match silent.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Ok(Some(status)) = running.child.try_wait() {
                    panic!(
                        "the image's process ended ({status}) before connecting: {}",
                        running.output()
                    );
                }
                assert!(Instant::now() < deadline, "the image's process never connected");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    assert_eq!(ids(pid, "Uid:"), vec![65532; 4]);
    assert_eq!(ids(pid, "Gid:"), vec![65532; 4]);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.starts_with(b"/poolwarden\0inspect\0"), "{cmdline:?}");
    running.stop();

    // No shell and no package manager anywhere in the root filesystem; the only
    // executable that is not a shared object is the binary.
    let mut executables = Vec::new();
    let mut forbidden = Vec::new();
    let rootfs = bundle.rootfs();
    let mut dirs = vec![rootfs.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let shown = path.strip_prefix(&rootfs).unwrap().display().to_string();
            // (var/lib/dpkg/status.d, the package records, is a directory.)
            if !meta.is_dir()
                && ["sh", "bash", "dash", "ash", "zsh", "busybox", "dpkg", "apt", "apt-get"].contains(&name.as_str())
            {
                forbidden.push(shown.clone());
            }
            if meta.is_dir() {
                dirs.push(path);
            } else if meta.is_file() && meta.permissions().mode() & 0o111 != 0 && !name.contains(".so") {
                executables.push(shown);
            }
        }
    }
    assert_eq!(
        forbidden,
        Vec::<String>::new(),
        "a shell or package manager in the image"
    );
    assert_eq!(executables, vec!["poolwarden".to_owned()]);
    assert!(!rootfs.join("bin/sh").exists());
    // And the runtime cannot start one.
    let shell = bundle.run(&["/bin/sh", "-c", "true"], true);
    assert!(!shell.status.success(), "{}", text(&shell));
    assert!(
        String::from_utf8_lossy(&shell.stderr).contains("no such file or directory"),
        "{}",
        text(&shell)
    );
}

#[test]
fn verify_full_uses_the_image_ca_bundle() {
    let certs = certificates();
    let d = certs.path().display();
    let pg = ThrowawayPg::start(&[
        "ssl=on",
        &format!("ssl_cert_file={d}/server.crt"),
        &format!("ssl_key_file={d}/server.key"),
    ]);
    let bundle = Bundle::unpack();
    let bundle_file = bundle.rootfs().join("etc/ssl/certs/ca-certificates.crt");
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert=system",
        pg.port
    );
    let inspect = ["inspect", "--database-url", url.as_str()];

    // The image's bundle does not trust the test CA: refused.
    let refused = bundle.run(&inspect, false);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("cannot connect"),
        "{}",
        text(&refused)
    );

    // The same run once the test CA is in the image's bundle (this copy's only).
    let mut trusted = std::fs::read_to_string(&bundle_file).unwrap();
    assert!(trusted.matches("BEGIN CERTIFICATE").count() > 100, "the image's bundle");
    trusted.push_str(&std::fs::read_to_string(certs.path().join("ca.crt")).unwrap());
    std::fs::write(&bundle_file, trusted).unwrap();
    let ok = bundle.run(&inspect, false);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(!ok.stdout.is_empty(), "{}", text(&ok));
}
