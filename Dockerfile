FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY services ./services
COPY chain ./chain
COPY contracts_abi ./contracts_abi
RUN pip install --no-cache-dir .
ENV CREDITRAIL_API_HOST=0.0.0.0
EXPOSE 8000
CMD ["creditrail", "run"]
