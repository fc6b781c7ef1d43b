//! The user-facing surface: command-line parsing and the validated configuration it produces.
//! (The control socket joins this module in a later issue.)

pub mod cli;
pub mod config;
pub mod vmconfig;

pub use config::{
    BootSource, ConfigError, DiskConfig, InputSource, OutputTarget, PartitionConfig, VmConfig,
    VsockConfig,
};
