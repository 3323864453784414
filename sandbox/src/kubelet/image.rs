//! Images the project built, as OCI image layouts on disk (`make image`), and
//! what a container of one runs: the image's `Entrypoint`/`Cmd` overridden by
//! the container's `command`/`args` the way Kubernetes defines it.
//! See <https://kubernetes.io/docs/tasks/inject-data-application/define-command-argument-container/#notes>
//! and the image config's fields in
//! <https://github.com/opencontainers/image-spec/blob/main/config.md>.
//!
//! Nothing is pulled: an image name the node was not given is not run as an
//! image at all (its pod keeps running the container's `command` as a local
//! process, as before).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::env::expand;

/// One image the node can run: an OCI image layout and the tag in it
/// (`org.opencontainers.image.ref.name`).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSource {
    pub layout: PathBuf,
    pub tag: String,
}

/// The images the node can run, by the name a pod gives in `image:`.
#[derive(Debug, Clone, Default)]
pub struct ImageMap(Vec<(String, ImageSource)>);

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("--image {0:?}: expected NAME=LAYOUT_DIR (e.g. poolwarden:dev=/var/tmp/oci)")]
    BadArgument(String),
    #[error("image {image}: {what}: {detail}")]
    Layout {
        image: String,
        what: String,
        detail: String,
    },
}

impl ImageMap {
    /// Parses `NAME=LAYOUT_DIR`: the tag looked up in the layout is NAME's tag
    /// (after the last `:` of its last path segment), `latest` when it has none.
    pub fn parse(args: &[String]) -> Result<ImageMap, ImageError> {
        let mut out = Vec::new();
        for arg in args {
            let Some((name, layout)) = arg.split_once('=') else {
                return Err(ImageError::BadArgument(arg.clone()));
            };
            if name.is_empty() || layout.is_empty() {
                return Err(ImageError::BadArgument(arg.clone()));
            }
            let last = name.rsplit('/').next().unwrap_or(name);
            let tag = last.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
            out.push((
                name.to_string(),
                ImageSource {
                    layout: PathBuf::from(layout),
                    tag: tag.to_string(),
                },
            ));
        }
        Ok(ImageMap(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The layout of the image a container names, if the node was given it.
    /// `poolwarden:dev` and `docker.io/library/poolwarden:dev` are different
    /// names: only the exact one given matches.
    pub fn get(&self, image: &str) -> Option<&ImageSource> {
        self.0.iter().find(|(n, _)| n == image).map(|(_, s)| s)
    }
}

/// The parts of an image's config a container start needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

fn layout_err(image: &ImageSource, what: &str, detail: impl std::fmt::Display) -> ImageError {
    ImageError::Layout {
        image: format!("{}:{}", image.layout.display(), image.tag),
        what: what.to_string(),
        detail: detail.to_string(),
    }
}

fn blob(layout: &Path, digest: &str) -> Option<PathBuf> {
    let (alg, hex) = digest.split_once(':')?;
    // A digest is `algorithm:hex`; anything else must not become a path.
    if alg.is_empty() || hex.is_empty() || !(alg.chars().chain(hex.chars()).all(|c| c.is_ascii_alphanumeric())) {
        return None;
    }
    Some(layout.join("blobs").join(alg).join(hex))
}

fn read_json(image: &ImageSource, what: &str, path: &Path) -> Result<Value, ImageError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| layout_err(image, what, format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| layout_err(image, what, format!("{}: {e}", path.display())))
}

/// Reads the image config of `image.tag` from the layout: index.json, the
/// manifest it names, the config that names.
pub fn read_config(image: &ImageSource) -> Result<ImageConfig, ImageError> {
    let index = read_json(image, "index.json", &image.layout.join("index.json"))?;
    let manifest_desc = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == image.tag.as_str())
        .ok_or_else(|| layout_err(image, "index.json", format!("no manifest tagged {:?}", image.tag)))?;
    let digest = manifest_desc["digest"].as_str().unwrap_or_default();
    let path = blob(&image.layout, digest).ok_or_else(|| layout_err(image, "manifest", "no valid digest"))?;
    let manifest = read_json(image, "manifest", &path)?;
    let digest = manifest["config"]["digest"].as_str().unwrap_or_default();
    let path = blob(&image.layout, digest).ok_or_else(|| layout_err(image, "image config", "no valid digest"))?;
    let config = read_json(image, "image config", &path)?;
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    Ok(ImageConfig {
        entrypoint: strings(&config["config"]["Entrypoint"]),
        cmd: strings(&config["config"]["Cmd"]),
    })
}

/// What the container runs, as Kubernetes defines it: `command` replaces the
/// image's Entrypoint (and then its Cmd is not used), `args` replaces its Cmd;
/// both are expanded against the container's environment (`$(VAR)`).
pub fn container_process(container: &Value, image: &ImageConfig, env: &[(String, String)]) -> Vec<String> {
    let strings = |v: &Value| -> Option<Vec<String>> {
        let a = v.as_array()?;
        Some(a.iter().filter_map(|s| s.as_str()).map(|s| expand(s, env)).collect())
    };
    let command = strings(&container["command"]).filter(|c| !c.is_empty());
    let args = strings(&container["args"]).filter(|a| !a.is_empty());
    match (command, args) {
        (Some(command), Some(args)) => command.into_iter().chain(args).collect(),
        (Some(command), None) => command,
        (None, Some(args)) => image.entrypoint.iter().cloned().chain(args).collect(),
        (None, None) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_map_to_layouts_and_tags() {
        let map = ImageMap::parse(&[
            "poolwarden:dev=/var/tmp/oci".to_string(),
            "reg.example:5000/team/app=/x".to_string(),
        ])
        .unwrap();
        assert_eq!(
            map.get("poolwarden:dev"),
            Some(&ImageSource {
                layout: "/var/tmp/oci".into(),
                tag: "dev".into()
            })
        );
        assert_eq!(map.get("reg.example:5000/team/app").unwrap().tag, "latest");
        assert!(map.get("poolwarden:other").is_none());
        assert!(map.get("docker.io/library/poolwarden:dev").is_none());
        for bad in ["poolwarden:dev", "=/x", "poolwarden:dev="] {
            assert!(ImageMap::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn command_and_args_override_the_image_as_kubernetes_says() {
        let image = ImageConfig {
            entrypoint: vec!["/poolwarden".into()],
            cmd: vec!["--help".into()],
        };
        let env = vec![("PORT".to_string(), "9".to_string())];
        let run = |c: Value| container_process(&c, &image, &env);
        assert_eq!(run(json!({})), ["/poolwarden", "--help"]);
        assert_eq!(
            run(json!({"args": ["controller", "--port", "$(PORT)"]})),
            ["/poolwarden", "controller", "--port", "9"]
        );
        assert_eq!(run(json!({"command": ["/bin/x"]})), ["/bin/x"]);
        assert_eq!(run(json!({"command": ["/bin/x"], "args": ["a"]})), ["/bin/x", "a"]);
        // An empty list is the same as none, as in the kubelet.
        assert_eq!(run(json!({"command": [], "args": []})), ["/poolwarden", "--help"]);
    }

    #[test]
    fn the_config_is_read_through_index_manifest_and_config() {
        let dir = tempfile::tempdir().unwrap();
        let l = dir.path();
        std::fs::create_dir_all(l.join("blobs/sha256")).unwrap();
        std::fs::write(
            l.join("blobs/sha256/cfg"),
            r#"{"config": {"Entrypoint": ["/poolwarden"], "User": "65532"}}"#,
        )
        .unwrap();
        std::fs::write(
            l.join("blobs/sha256/man"),
            r#"{"config": {"digest": "sha256:cfg"}, "layers": []}"#,
        )
        .unwrap();
        std::fs::write(
            l.join("index.json"),
            r#"{"manifests": [{"digest": "sha256:man", "annotations": {"org.opencontainers.image.ref.name": "dev"}}]}"#,
        )
        .unwrap();
        let src = ImageSource {
            layout: l.to_path_buf(),
            tag: "dev".into(),
        };
        assert_eq!(
            read_config(&src).unwrap(),
            ImageConfig {
                entrypoint: vec!["/poolwarden".into()],
                cmd: vec![]
            }
        );
        let missing = ImageSource {
            tag: "prod".into(),
            ..src.clone()
        };
        let err = read_config(&missing).unwrap_err().to_string();
        assert!(err.contains("no manifest tagged \"prod\""), "{err}");
        std::fs::write(
            l.join("index.json"),
            r#"{"manifests": [{"digest": "sha256:../../x", "annotations": {"org.opencontainers.image.ref.name": "dev"}}]}"#,
        )
        .unwrap();
        assert!(read_config(&src).unwrap_err().to_string().contains("no valid digest"));
    }
}
