"""The ``dense`` arm's index and personalization params: which faiss index it builds
(flat, HNSW, IVF-PQ) and how a user's history blends into the query vector."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from ltrr.components import Params


class FlatIndex(Params):
    type: Literal["flat"] = Field("flat", description="Exact inner-product search.")


class HnswIndex(Params):
    type: Literal["hnsw"] = Field(description="Hierarchical navigable small-world graph.")
    m: int = Field(32, ge=4, le=256, description="Graph neighbours per node (build time).")
    ef_construction: int = Field(200, ge=8, description="Candidate list size while building.")
    ef_search: int = Field(128, ge=1, description=(
        "Candidate list size while searching (query time; at least k is used)."))


class IvfPqIndex(Params):
    type: Literal["ivfpq"] = Field(description="Inverted lists with product quantization.")
    nlist: int = Field(256, ge=1, description=(
        "Number of inverted lists (k-means cells); needs at least this many vectors to train, "
        "ideally 39x more."))
    m: int = Field(48, ge=1, description=(
        "Sub-quantizers per vector; must divide the encoder's dimension (384 for MiniLM)."))
    nbits: int = Field(8, ge=1, le=16, description=(
        "Bits per sub-quantizer code; training needs at least 2**nbits vectors."))
    nprobe: int = Field(16, ge=1, description="Inverted lists visited per query (query time).")
    refine: int = Field(4, ge=1, le=100, description=(
        "Re-score the top k x refine quantized hits exactly with the stored vectors and "
        "keep the best k (query time; 1: the quantized scores as they are)."))


IndexSpec = Annotated[Union[FlatIndex, HnswIndex, IvfPqIndex], Field(discriminator="type")]


class PersonalizeParams(Params):
    weight: float = Field(0.3, gt=0, le=1, description=(
        "Share of the user's vector in the blended query vector: "
        "normalize((1 - weight) * query + weight * user)."))
    max_history: int = Field(50, ge=1, description=(
        "Most recent engaged entities kept per user (their weighted mean is the user vector)."))
    events: list[str] | None = Field(None, description=(
        "Event types that count as engagement; default: every type whose feedback weight is "
        "positive. Events with a weight <= 0 never count."))
