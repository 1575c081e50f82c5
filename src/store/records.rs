//! Conversions between milan's API types and the format crate's records, so that a change of the
//! on-disk record is not a change of the API: only `store` reads and writes records.

use milan_index_format::{ItemRecord, ModelRecord, PixelRange as PixelRecord, TensorLayout};

use crate::contract::{ExtractorContract, InputLayout, PixelRange};
use crate::index::Item;

pub(crate) fn item_record(item: &Item) -> ItemRecord {
    ItemRecord {
        key: item.key.clone(),
        content_hash: item.content_hash,
        label: item.label.clone(),
        metadata: item.metadata.clone(),
    }
}

pub(crate) fn item_from_record(record: ItemRecord) -> Item {
    Item {
        key: record.key,
        content_hash: record.content_hash,
        label: record.label,
        metadata: record.metadata,
    }
}

pub(crate) fn model_record(contract: &ExtractorContract) -> ModelRecord {
    ModelRecord {
        fingerprint: contract.fingerprint,
        path: contract.path.clone(),
        input: contract.input.clone(),
        layout: match contract.layout {
            InputLayout::Nchw => TensorLayout::Nchw,
            InputLayout::Nhwc => TensorLayout::Nhwc,
        },
        size: contract.size,
        pixel_range: match contract.pixel_range {
            PixelRange::ZeroOne => PixelRecord::ZeroOne,
            PixelRange::MinusOneOne => PixelRecord::MinusOneOne,
            PixelRange::ImageNet => PixelRecord::ImageNet,
        },
        output: contract.output.clone(),
        dim: contract.dim,
    }
}

pub(crate) fn contract_from_record(record: ModelRecord) -> ExtractorContract {
    ExtractorContract {
        fingerprint: record.fingerprint,
        path: record.path,
        input: record.input,
        layout: match record.layout {
            TensorLayout::Nchw => InputLayout::Nchw,
            TensorLayout::Nhwc => InputLayout::Nhwc,
        },
        size: record.size,
        pixel_range: match record.pixel_range {
            PixelRecord::ZeroOne => PixelRange::ZeroOne,
            PixelRecord::MinusOneOne => PixelRange::MinusOneOne,
            PixelRecord::ImageNet => PixelRange::ImageNet,
        },
        output: record.output,
        dim: record.dim,
    }
}
