//! Shared by the etcd tests: the cluster harness and child processes.
#![allow(dead_code)]

pub mod child;
pub mod cluster;
pub mod history;
