#![doc = include_str!("../authoring.md")]
