//! Kubernetes: the controller (kube-runtime), its writes, and the reading of
//! Deployments, StatefulSets and Pods into the decision core's data.

pub mod actions;
pub mod cache;
pub mod checkpoints;
pub mod controller;
pub mod decoded;
pub mod failing;
pub mod follow;
pub mod gather;
pub mod index;
pub mod ownership;
pub mod pooler;
pub mod reconcile;
pub mod selector;
pub mod validated;
pub mod workloads;
