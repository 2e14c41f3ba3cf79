//! `favor import`: the projection matrices W of a checkpoint trained with another Performer
//! implementation, listed, written as `.npy` for `favor run --projection`, or served directly
//! (`favor run --projection STATE.safetensors --layer N`).
//!
//! performer-pytorch keeps each attention layer's W as the buffer
//! `….fast_attention.projection_matrix` (`nb_features × dim_head`) in its `state_dict()`. A
//! `PerformerLM` or `Performer` registers its layers twice — under `net.` and again under
//! `proj_updater.instance.` (the module that redraws them) — so a state dict holds each W
//! twice; the second name is an alias and is listed only when its values differ.

use std::path::{Path, PathBuf};

use favor_npy as npy;
use favor_tensor::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use crate::args::{CliError, CliResult};

/// The flags of `favor import`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportFlags {
    /// Whose checkpoint: performer-pytorch.
    #[arg(long, value_name = "PEER")]
    pub from: String,
    /// The state dict, as .safetensors (`safetensors.torch.save_file(model.state_dict(), …)`).
    #[arg(value_name = "STATE.safetensors")]
    pub state: PathBuf,
    /// One layer only: its number in the listing, or its tensor name.
    #[arg(long, value_name = "N|NAME")]
    pub layer: Option<String>,
    /// Write the matrices: a directory receiving `layer<N>.npy` for every layer, or, with
    /// --layer, the `.npy` file. Without it the layers are listed.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
}

/// One layer's projection W.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerProjection {
    /// The tensor's name in the state dict.
    pub name: String,
    /// m (random features).
    pub rows: usize,
    /// d (head dimension).
    pub cols: usize,
    /// The stored dtype (`F32`, `F16`, …).
    pub dtype: String,
    /// W row-major, widened exactly to f64.
    pub data: Vec<f64>,
}

/// The suffix performer-pytorch gives every layer's projection buffer.
const SUFFIX: &str = "fast_attention.projection_matrix";
/// The prefix of the second registration of the same layers (see the module docs).
const ALIAS: &str = "proj_updater.instance.";

/// The projection matrices of a performer-pytorch state dict (safetensors bytes), in the
/// order of their layer numbers, aliases dropped.
pub fn performer_pytorch_projections(bytes: &[u8]) -> Result<Vec<LayerProjection>, String> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let mut found = Vec::new();
    for (name, view) in st.tensors() {
        if !name.ends_with(SUFFIX) {
            continue;
        }
        let [rows, cols] = view.shape()[..] else {
            return Err(format!(
                "{name}: shape {:?}, expected (nb_features, dim_head)",
                view.shape()
            ));
        };
        let data = widen(view.dtype(), view.data()).ok_or_else(|| {
            format!(
                "{name}: dtype {:?} (expected F32, F64, F16 or BF16)",
                view.dtype()
            )
        })?;
        if let Some(bad) = data.iter().position(|x| !x.is_finite()) {
            return Err(format!("{name}: element {bad} is not finite"));
        }
        found.push(LayerProjection {
            name,
            rows,
            cols,
            dtype: format!("{:?}", view.dtype()),
            data,
        });
    }
    if found.is_empty() {
        return Err(format!(
            "no tensor named …{SUFFIX}: not a performer-pytorch state dict, or a model without \
             random-feature attention"
        ));
    }
    found.sort_by_key(|a| natural_key(&a.name));
    let originals: Vec<LayerProjection> = found
        .iter()
        .filter(|p| !p.name.contains(ALIAS))
        .cloned()
        .collect();
    let mut out = originals.clone();
    for p in found.iter().filter(|p| p.name.contains(ALIAS)) {
        let twin = p.name.replacen(ALIAS, "net.", 1);
        let same = originals
            .iter()
            .any(|o| o.name.ends_with(&twin) && o.data == p.data);
        if !same {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// A sort key that orders `layers.10` after `layers.9`.
fn natural_key(name: &str) -> Vec<(u64, String)> {
    name.split('.')
        .map(|part| match part.parse::<u64>() {
            Ok(n) => (n, String::new()),
            Err(_) => (u64::MAX, part.to_string()),
        })
        .collect()
}

/// Little-endian tensor bytes as f64 (exact for every supported dtype).
fn widen(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f64>> {
    let v = match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f64())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f64())
            .collect(),
        _ => return None,
    };
    Some(v)
}

/// Reads the projections of `path` (a performer-pytorch state dict).
pub fn read_projections(path: &Path) -> CliResult<Vec<LayerProjection>> {
    let bytes =
        std::fs::read(path).map_err(|e| CliError::input(format!("{}: {e}", path.display())))?;
    performer_pytorch_projections(&bytes)
        .map_err(|e| CliError::input(format!("{}: {e}", path.display())))
}

/// The layer `which` names (its number in the listing, or its tensor name), or the only one.
pub fn select<'a>(
    layers: &'a [LayerProjection],
    which: Option<&str>,
    path: &Path,
) -> CliResult<&'a LayerProjection> {
    let names = || {
        layers
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{i}: {}", l.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match which {
        None if layers.len() == 1 => Ok(&layers[0]),
        None => Err(CliError::input(format!(
            "{} holds {} projections; pick one with --layer ({})",
            path.display(),
            layers.len(),
            names()
        ))),
        Some(w) => {
            let hit = match w.parse::<usize>() {
                Ok(i) => layers.get(i),
                Err(_) => layers.iter().find(|l| l.name == w),
            };
            hit.ok_or_else(|| {
                CliError::input(format!(
                    "--layer {w:?}: {} has no such layer ({})",
                    path.display(),
                    names()
                ))
            })
        }
    }
}

/// Whether `path` names a safetensors file (by its extension).
pub fn is_safetensors(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "safetensors")
}

/// `favor import`.
pub fn main(flags: ImportFlags) -> CliResult<()> {
    let ImportFlags {
        from,
        state,
        layer,
        out,
    } = flags;
    if from != "performer-pytorch" {
        return Err(CliError::input(format!(
            "--from {from:?}: expected performer-pytorch (JAX checkpoints keep no projection: \
             its layers redraw W from a seed)"
        )));
    }
    let layers = read_projections(&state)?;
    let write = |path: &Path, l: &LayerProjection| -> CliResult<()> {
        let data: Vec<f32> = l.data.iter().map(|&x| x as f32).collect();
        let exact = data.iter().zip(&l.data).all(|(&a, &b)| f64::from(a) == b);
        let r = if exact {
            npy::write(path, &[l.rows, l.cols], &data)
        } else {
            npy::write(path, &[l.rows, l.cols], &l.data)
        };
        r.map_err(|e| CliError::input(format!("{}: {e}", path.display())))
    };
    match (layer.as_deref(), out) {
        (None, None) => {
            for (i, l) in layers.iter().enumerate() {
                println!("{i}\t{}\t({}, {})\t{}", l.name, l.rows, l.cols, l.dtype);
            }
            Ok(())
        }
        (Some(which), None) => {
            let l = select(&layers, Some(which), &state)?;
            println!("{}\t({}, {})\t{}", l.name, l.rows, l.cols, l.dtype);
            Ok(())
        }
        (Some(which), Some(file)) => write(&file, select(&layers, Some(which), &state)?),
        (None, Some(dir)) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| CliError::input(format!("{}: {e}", dir.display())))?;
            for (i, l) in layers.iter().enumerate() {
                let path = dir.join(format!("layer{i}.npy"));
                write(&path, l)?;
                println!("{}\t{}", path.display(), l.name);
            }
            Ok(())
        }
    }
}
