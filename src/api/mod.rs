//! The user-facing surface: command-line parsing, the validated configuration it produces,
//! and the control socket (docs/api.md).

pub mod cli;
pub mod config;
pub mod control;
pub mod sandbox_policy;
pub mod vmconfig;

pub use config::{
    BootSource, ConfigError, DiskConfig, ImageFormat, InputSource, OutputTarget, PartitionConfig,
    VmConfig, VsockConfig,
};
