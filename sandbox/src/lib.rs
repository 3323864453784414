//! poolwarden's sandbox: an in-memory Kubernetes API server, a "kubelet" that
//! runs pods as local processes, and the controller-manager parts poolwarden's
//! end-to-end tests need. Dev/test only; never part of the production binary.

pub mod apiserver;
pub mod cluster;
pub mod controllers;
pub mod fly;
pub mod kubectl;
pub mod kubelet;
pub mod manifests;
pub mod sandbox;

pub use sandbox::{Sandbox, SandboxError, SandboxOptions};
