"""Google Gemini API channels (generateContent / streamGenerateContent)."""
