"""Redis access shared by every package: the client (`client`) and shared readers (`sites`)."""
