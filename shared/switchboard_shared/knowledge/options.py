"""A knowledge job's options, as stored on the job and sent to Dify with each document.

`ProcessRule` mirrors Dify's own model (`services/entities/knowledge_entities/knowledge_entities.py`)
plus the checks Dify's `DocumentService` applies, so a bad rule is a 400 at job creation
instead of one failure per document later.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

IndexingTechnique = Literal["high_quality", "economy"]
DocForm = Literal["text_model", "hierarchical_model", "qa_model"]
MetadataValue = str | int | float


class _DifyShape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PreProcessingRule(_DifyShape):
    id: Literal["remove_extra_spaces", "remove_urls_emails"]
    enabled: bool


class Segmentation(_DifyShape):
    separator: str = "\n"
    max_tokens: int = Field(ge=1)
    chunk_overlap: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> "Segmentation":
        if self.chunk_overlap >= self.max_tokens:
            raise ValueError("chunk_overlap must be smaller than max_tokens")
        return self


class Rule(_DifyShape):
    pre_processing_rules: list[PreProcessingRule] | None = None
    segmentation: Segmentation | None = None
    parent_mode: Literal["full-doc", "paragraph"] | None = None
    subchunk_segmentation: Segmentation | None = None


class ProcessRule(_DifyShape):
    """How Dify cleans and splits a document."""

    mode: Literal["automatic", "custom", "hierarchical"]
    rules: Rule | None = None

    @model_validator(mode="after")
    def _rules_for_custom_modes(self) -> "ProcessRule":
        if self.mode == "automatic":
            return self
        if self.rules is None or self.rules.segmentation is None:
            raise ValueError(f"process_rule mode '{self.mode}' needs rules.segmentation")
        if self.mode == "hierarchical" and self.rules.parent_mode is None:
            raise ValueError("process_rule mode 'hierarchical' needs rules.parent_mode")
        return self


#: What Dify is sent when a job names no process rule.
AUTOMATIC = ProcessRule(mode="automatic")


class JobOptions(BaseModel):
    """Per-job choices, stored as `knowledge_jobs.options`."""

    indexing_technique: IndexingTechnique | None = None
    process_rule: ProcessRule = AUTOMATIC
    doc_form: DocForm | None = None
    doc_language: str | None = Field(None, max_length=64)
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    sync: bool = Field(False, description="Also delete the documents Switchboard put in the dataset whose names this job lacks.")
    dry_run: bool = Field(False, description="Change nothing in Dify: plan the job (and its sync deletions) only.")

    def dify_fields(self) -> dict[str, Any]:
        """The fields every create/update call carries (`name`/`text`/file are added by the caller)."""
        fields: dict[str, Any] = {"process_rule": self.process_rule.model_dump(exclude_none=True)}
        if self.indexing_technique is not None:
            fields["indexing_technique"] = self.indexing_technique
        if self.doc_form is not None:
            fields["doc_form"] = self.doc_form
        if self.doc_language is not None:
            fields["doc_language"] = self.doc_language
        return fields
