//! Disk images (raw files and composite GPT disks). Filled by the storage issue.
